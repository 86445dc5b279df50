package local

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsIocFiemap is FS_IOC_FIEMAP, _IOWR('f', 11, struct fiemap): the same
// number on every Linux architecture Go supports (x/sys has no constant).
const fsIocFiemap = 0xC020660B

// FIEMAP flags (linux/fiemap.h).
const (
	fiemapFlagSync = 0x1 // sync the file before mapping

	extentLast          = 0x1
	extentUnknown       = 0x2
	extentDelalloc      = 0x4
	extentEncoded       = 0x8
	extentDataEncrypted = 0x80
	extentNotAligned    = 0x100
	extentDataInline    = 0x200
	extentDataTail      = 0x400
	extentUnwritten     = 0x800
	extentMerged        = 0x1000
	extentShared        = 0x2000
)

// unsafeFlags are the extent flags that make a physical address meaningless
// for telling whether two files share a block: no address yet (delalloc,
// unknown), data stored other than as plain blocks (encoded, encrypted,
// inline, tail-packed, not aligned), or extents merged from block maps.
const unsafeFlags = extentUnknown | extentDelalloc | extentEncoded | extentDataEncrypted |
	extentNotAligned | extentDataInline | extentDataTail | extentMerged

// Sizes of struct fiemap and struct fiemap_extent.
const (
	fiemapHeader = 32
	fiemapExtent = 56
	fiemapBatch  = 512 // extents asked for per ioctl
)

// physExtent is one extent of a file's block map: Len bytes at logical
// offset Logical are stored at byte Physical of the device.
type physExtent struct {
	Logical, Physical, Len int64
	Flags                  uint32
}

func (e physExtent) end() int64 { return e.Logical + e.Len }

// fiemap returns the extents of f that overlap [0, size), sorted by logical
// offset, after syncing the file (FIEMAP_FLAG_SYNC: no delalloc extent of
// data already written). An error means the file system cannot map the
// file; the caller reads everything.
func fiemap(f *os.File, size int64) ([]physExtent, error) {
	buf := make([]byte, fiemapHeader+fiemapBatch*fiemapExtent)
	ne := binary.NativeEndian // the ioctl's structs are in the CPU's byte order
	var out []physExtent
	for pos := int64(0); pos < size; {
		clear(buf[:fiemapHeader])
		ne.PutUint64(buf[0:], uint64(pos))      // fm_start
		ne.PutUint64(buf[8:], uint64(size-pos)) // fm_length
		ne.PutUint32(buf[16:], fiemapFlagSync)  // fm_flags
		ne.PutUint32(buf[24:], fiemapBatch)     // fm_extent_count
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0])))
		runtime.KeepAlive(buf)
		if errno != 0 {
			return nil, fmt.Errorf("FIEMAP %s: %w", f.Name(), errno)
		}
		n := int(ne.Uint32(buf[20:])) // fm_mapped_extents
		if n == 0 {
			break
		}
		if n > fiemapBatch {
			return nil, fmt.Errorf("FIEMAP %s: %d extents mapped into room for %d", f.Name(), n, fiemapBatch)
		}
		last, next := false, pos
		for i := range n {
			b := buf[fiemapHeader+i*fiemapExtent:]
			e := physExtent{Logical: int64(ne.Uint64(b[0:])), Physical: int64(ne.Uint64(b[8:])),
				Len: int64(ne.Uint64(b[16:])), Flags: ne.Uint32(b[40:])}
			if e.Len <= 0 || e.Logical < 0 || e.Physical < 0 || len(out) > 0 && e.Logical < out[len(out)-1].end() {
				return nil, fmt.Errorf("FIEMAP %s: malformed or unsorted extent %+v", f.Name(), e)
			}
			last = last || e.Flags&extentLast != 0
			if e.Logical >= size {
				last = true
				break
			}
			out = append(out, e)
			next = max(next, e.end())
		}
		if last || next <= pos {
			break
		}
		pos = next
	}
	return out, nil
}
