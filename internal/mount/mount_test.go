package mount

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// memFile is a File in memory whose zero 64 KiB blocks are holes.
type memFile []byte

func (m memFile) Size() int64 { return int64(len(m)) }

func (m memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m memFile) Extents(off, n int64) []Extent {
	const blk = 64 << 10
	end := min(off+n, m.Size())
	var out []Extent
	for off < end {
		next := min((off/blk+1)*blk, end)
		b := m[off/blk*blk : min((off/blk+1)*blk, m.Size())]
		data := !bytes.Equal(b, make([]byte, len(b)))
		if k := len(out) - 1; k >= 0 && out[k].Data == data {
			out[k].Length += next - off
		} else {
			out = append(out, Extent{Offset: off, Length: next - off, Data: data})
		}
		off = next
	}
	return out
}

func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CSBS_REQUIRE_FUSE") == "1" {
			t.Fatalf("FUSE tests need /dev/fuse and root, and CSBS_REQUIRE_FUSE=1: %v", err)
		}
		t.Skip("FUSE tests need /dev/fuse and root")
	}
}

// TestMountReadsAndRefuses mounts a tree, reads files at offsets, finds
// holes with SEEK_DATA/SEEK_HOLE, and is refused every change.
func TestMountReadsAndRefuses(t *testing.T) {
	needFUSE(t)
	disk := make(memFile, 1<<20+100)
	copy(disk[300<<10:], bytes.Repeat([]byte("backup data "), 4000))
	copy(disk[1<<20:], "the end")
	dir := t.TempDir()
	srv, err := Mount(dir, &Dir{
		Files: map[string]File{"sys.img": disk},
		Dirs:  map[string]*Dir{"older": {Files: map[string]File{"sys.img": disk[:4096]}}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()

	got, err := os.ReadFile(filepath.Join(dir, "sys.img"))
	if err != nil || !bytes.Equal(got, disk) {
		t.Fatalf("read sys.img: %d bytes, %v", len(got), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "older", "sys.img")); err != nil || fi.Size() != 4096 || fi.Mode().Perm() != 0o444 {
		t.Fatalf("older/sys.img: %v, %v", fi, err)
	}
	f, err := os.Open(filepath.Join(dir, "sys.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 10)
	if _, err := f.ReadAt(p, 1<<20); err != nil && err != io.EOF || string(p[:7]) != "the end" {
		t.Errorf("ReadAt the end: %q, %v", p, err)
	}
	if off, err := f.Seek(0, seekData); err != nil || off != 256<<10 {
		t.Errorf("SEEK_DATA from 0 = %d, %v; want %d (the first data block)", off, err, 256<<10)
	}
	if off, err := f.Seek(300<<10, seekHole); err != nil || off != 384<<10 {
		t.Errorf("SEEK_HOLE from 300 KiB = %d, %v; want %d", off, err, 384<<10)
	}

	for name, change := range map[string]func() error{
		"open for writing": func() error { _, err := os.OpenFile(filepath.Join(dir, "sys.img"), os.O_RDWR, 0); return err },
		"create":           func() error { _, err := os.Create(filepath.Join(dir, "new")); return err },
		"remove":           func() error { return os.Remove(filepath.Join(dir, "sys.img")) },
		"mkdir":            func() error { return os.Mkdir(filepath.Join(dir, "d"), 0o755) },
		"chmod":            func() error { return os.Chmod(filepath.Join(dir, "sys.img"), 0o644) },
	} {
		if err := change(); err == nil {
			t.Errorf("%s succeeded on a read-only mount", name)
		}
	}
}
