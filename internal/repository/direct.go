package repository

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Packs and restored volumes are written with O_DIRECT where the file system
// allows it. Data written once and not read back soon has no business in the
// page cache: copying it there costs CPU (on virtual machines that hand free
// memory back to the host, touching fresh page-cache pages costs ten times
// more than the copy) and evicts what the system does use. Direct I/O needs
// offsets, lengths and memory aligned to the block size; blobs in packs are
// therefore padded to 4 KiB and the buffers are allocated aligned.
const align = 4096

func alignUp(n int) int { return (n + align - 1) &^ (align - 1) }

// alignedBuf returns n bytes whose first byte is aligned.
func alignedBuf(n int) []byte {
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (align - 1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n : off+n]
}

func isAligned(b []byte) bool {
	return len(b)%align == 0 && uintptr(unsafe.Pointer(&b[0]))&(align-1) == 0
}

// setDirect turns O_DIRECT on or off for f. It fails where the file system
// does not support it (tmpfs, some network file systems).
func setDirect(f *os.File, on bool) error {
	fd := int(f.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		fl |= unix.O_DIRECT
	} else {
		fl &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return err
}

// openDirect opens a second, O_DIRECT descriptor for writing to f's file
// (or device), leaving f itself untouched. It returns nil if that is not
// possible; callers then write through f.
func openDirect(f *os.File) *os.File {
	d, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return d
}
