package local

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/compute/local/xfstest"
)

// residentBytes is how much of the file at path is in the page cache
// (mincore over a read-only mapping).
func residentBytes(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	var n int64
	for _, v := range vec {
		if v&1 != 0 {
			n += int64(page)
		}
	}
	return n
}

// snapshotOne snapshots a running server whose one disk is the image at
// path, with a driver of its own.
func snapshotOne(t *testing.T, path string) *compute.Snapshot {
	t.Helper()
	ctx := context.Background()
	d, _ := newInventory(t, t.TempDir(), Inventory{Servers: []ServerSpec{
		server("s1", "p1", VolumeSpec{ID: "v-sys", Name: "sys", Path: path, Bootable: true}),
	}})
	s, err := d.Server(ctx, "p1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// readAll reads the volume in 1 MiB requests, as a backup does.
func readAll(t *testing.T, v compute.SnapshotVolume) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < v.Size; off += int64(len(buf)) {
		if _, err := v.Reader.ReadAt(buf, off); err != nil && off+int64(len(buf)) < v.Size {
			t.Fatal(err)
		}
	}
}

// TestCloneReadLeavesNoPageCache: what a backup reads through a clone is
// dropped from the page cache as it goes (the clone's cache is the
// backup's alone: kept, it would evict a disk's worth of what the host
// uses), while a live read leaves the image's own cache as it was.
func TestCloneReadLeavesNoPageCache(t *testing.T) {
	mnt := xfstest.Mount(t)
	const size = 64 << 20
	img := filepath.Join(mnt, "sys.img")
	writeRandom(t, img, size)
	snap := snapshotOne(t, img)
	defer snap.Release()
	v := snap.Volumes[0]
	if snap.Method != "reflink" {
		t.Fatalf("snapshot method %s, want reflink", snap.Method)
	}
	readAll(t, v)
	// While the backup runs, what it read is dropped as it goes: read-ahead
	// and the last requests may stay, a few MiB.
	if got := residentBytes(t, v.Path); got > 8<<20 {
		t.Errorf("after reading the clone, %d of its %d bytes are still in the page cache; want them dropped as read", got, size)
	}
	clone := v.Path
	keep := filepath.Join(mnt, "clone-link")
	if err := os.Link(clone, keep); err != nil { // to look at it after the release removes it
		t.Fatal(err)
	}
	if err := snap.Release(); err != nil {
		t.Fatal(err)
	}
	if got := residentBytes(t, keep); got > 0 {
		t.Errorf("after the snapshot's release %d bytes of the clone are still in the page cache; want none", got)
	}

	// A live read (no clone on this file system) leaves the image cached.
	live := filepath.Join(t.TempDir(), "live.img")
	writeRandom(t, live, 16<<20)
	snap2 := snapshotOne(t, live)
	defer snap2.Release()
	if snap2.Method == "reflink" {
		t.Skip("the temporary directory clones too; no live read to compare with")
	}
	readAll(t, snap2.Volumes[0])
	if got := residentBytes(t, live); got < 8<<20 {
		t.Errorf("after a live read only %d of 16 MiB of the image are cached; a live read must not drop the image's cache", got)
	}
}

// TestCloneReadShapes: a clone's reads return the source's bytes at the
// snapshot, whatever their shape — aligned ones go straight from the disk
// (O_DIRECT), the others through the page cache — including what was
// written to the source a moment before and never synced, and the odd
// tail of a file whose size is no multiple of a block.
func TestCloneReadShapes(t *testing.T) {
	mnt := xfstest.Mount(t)
	const size = 8<<20 + 1234 // an odd tail
	img := filepath.Join(mnt, "sys.img")
	writeRandom(t, img, size)
	// Written through the page cache, not synced: the clone must hold it.
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fresh := make([]byte, 3<<20)
	for i := range fresh {
		fresh[i] = byte(i*7 + 1)
	}
	if _, err := f.WriteAt(fresh, 2<<20+512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	snap := snapshotOne(t, img)
	defer snap.Release()
	r := snap.Volumes[0].Reader.(*fileReader)
	if r.direct == nil {
		t.Fatal("the clone was not opened for direct reads on XFS")
	}
	// The source changes after the snapshot; the clone must not.
	if err := os.WriteFile(img, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}

	page := make([]byte, 2<<20+2*dioAlign)
	shift := int(dioAlign - uintptr(unsafe.Pointer(&page[0]))%dioAlign) // page[shift:] is aligned
	for _, tc := range []struct {
		name    string
		bufOff  int // of the buffer from an aligned address
		off     int64
		n       int
		wantEOF bool
	}{
		{"aligned (direct)", 0, 1 << 20, 1 << 20, false},
		{"aligned over the fresh write", 0, 2 << 20, 2 << 20, false},
		{"unaligned buffer", 3, 1 << 20, 1 << 20, false},
		{"unaligned offset", 0, 2<<20 + 100, 64 << 10, false},
		{"unaligned length", 0, 4 << 20, 1000, false},
		{"the odd tail", 0, 8 << 20, 2 << 20, true},
		{"past the end", 0, size, 4096, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := page[shift+tc.bufOff : shift+tc.bufOff+tc.n]
			n, err := r.ReadAt(buf, tc.off)
			if tc.wantEOF != (err == io.EOF) || err != nil && err != io.EOF {
				t.Fatalf("read %d at %d: %d, %v (EOF wanted: %v)", tc.n, tc.off, n, err, tc.wantEOF)
			}
			end := min(tc.off+int64(tc.n), size)
			if int64(n) != max(0, end-tc.off) || !bytes.Equal(buf[:n], want[min(tc.off, size):end]) {
				t.Errorf("read %d at %d: %d bytes differ from the source at the snapshot", tc.n, tc.off, n)
			}
		})
	}
	if r.noDirect.Load() {
		t.Error("direct reads were refused on XFS")
	}
}
