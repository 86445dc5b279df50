package nbd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// needQEMUTools skips without qemu-img and qemu-nbd, unless CSBS_REQUIRE_LIBVIRT
// is set (scripts/test.sh as root installs them): then it fails.
func needQEMUTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-nbd"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CSBS_REQUIRE_LIBVIRT") != "" {
				t.Fatalf("%s is missing and CSBS_REQUIRE_LIBVIRT is set: %v", tool, err)
			}
			t.Skipf("%s is not installed (Debian: qemu-utils); set CSBS_REQUIRE_LIBVIRT=1 to fail instead", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// serveImage exports image (format fmt) with qemu-nbd on a unix socket until the
// test ends.
func serveImage(t *testing.T, image, format string, extra ...string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	args := append([]string{"-f", format, "-k", sock, "-x", "disk", "--persistent"}, extra...)
	cmd := exec.Command("qemu-nbd", append(args, image)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// qemu-nbd binds its socket a moment before it listens: wait until a
	// connection is taken (--persistent: a probe does not end the server),
	// not merely for the socket file.
	for range 500 {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("qemu-nbd did not listen on its socket within 5 s")
	return ""
}

const mib = 1 << 20

// TestReadWriteZero: guest-visible bytes of a qcow2 through qemu-nbd, holes
// reported by base:allocation, writes and zeroing read back.
func TestReadWriteZero(t *testing.T) {
	t.Parallel()
	needQEMUTools(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "d.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 64k", "-c", "write -P 0xcd 5M 1M", img)
	c, err := Dial(ctx, "unix", serveImage(t, img, "qcow2"), "disk", "base:allocation")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 8*mib || !c.HasContext("base:allocation") {
		t.Fatalf("size %d, base:allocation %v", c.Size(), c.HasContext("base:allocation"))
	}
	want := make([]byte, 8*mib)
	copy(want[mib:], bytes.Repeat([]byte{0xab}, 64<<10))
	copy(want[5*mib:], bytes.Repeat([]byte{0xcd}, mib))
	got := make([]byte, 8*mib)
	if _, err := c.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes read differ from the bytes written")
	}
	if n, err := c.ReadAt(make([]byte, 10), 8*mib-4); n != 4 || err != io.EOF {
		t.Errorf("read across the end: %d, %v; want 4, EOF", n, err)
	}

	ext, err := c.BlockStatus(ctx, "base:allocation", 0, c.Size())
	if err != nil {
		t.Fatal(err)
	}
	var pos int64
	for _, e := range ext {
		if e.Off != pos {
			t.Fatalf("extents %v do not cover the export in order", ext)
		}
		pos += e.Len
		data := e.Flags&(StateHole|StateZero) == 0
		for _, w := range [][2]int64{{mib, 64 << 10}, {5 * mib, mib}} {
			if w[0] < e.End() && e.Off < w[0]+w[1] && !data {
				t.Errorf("written range %v reported as hole/zero in %v", w, e)
			}
		}
	}
	if pos != c.Size() {
		t.Errorf("extents cover %d bytes, want %d", pos, c.Size())
	}

	for _, tt := range []struct {
		name string
		do   func() error
		off  int64
		want []byte
	}{
		{"write", func() error { _, err := c.WriteAt(bytes.Repeat([]byte{1}, 4096), 3*mib); return err }, 3 * mib, bytes.Repeat([]byte{1}, 4096)},
		{"zero", func() error { return c.Zero(ctx, 5*mib, mib) }, 5 * mib, make([]byte, mib)},
		{"write past the end", func() error { _, err := c.WriteAt([]byte{1}, 8*mib); return err }, 0, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if tt.want == nil {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, len(tt.want))
			if _, err := c.ReadAt(b, tt.off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, tt.want) {
				t.Error("read back other bytes")
			}
		})
	}
}

// TestDirtyBitmap: a persistent bitmap's dirty extents name exactly the
// writes made after it was added.
func TestDirtyBitmap(t *testing.T) {
	t.Parallel()
	needQEMUTools(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "d.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 4M", img)
	run(t, "qemu-img", "bitmap", "--add", "--granularity", "64K", img, "b0")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 2 1M 64k", "-c", "write -P 3 10M 128k", img)
	c, err := Dial(ctx, "unix", serveImage(t, img, "qcow2", "--read-only", "-B", "b0"), "disk", "base:allocation", "qemu:dirty-bitmap:b0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ext, err := c.BlockStatus(ctx, "qemu:dirty-bitmap:b0", 0, c.Size())
	if err != nil {
		t.Fatal(err)
	}
	var dirty []Extent
	for _, e := range ext {
		if e.Flags&Dirty != 0 {
			dirty = append(dirty, Extent{Off: e.Off, Len: e.Len})
		}
	}
	want := []Extent{{Off: mib, Len: 64 << 10}, {Off: 10 * mib, Len: 128 << 10}}
	if len(dirty) != len(want) || dirty[0] != want[0] || dirty[1] != want[1] {
		t.Errorf("dirty extents %v, want %v", dirty, want)
	}
	if _, err := c.BlockStatus(ctx, "qemu:dirty-bitmap:nope", 0, c.Size()); err == nil {
		t.Error("block status of a context not agreed to succeeded")
	}
	if _, err := c.WriteAt([]byte{1}, 0); err == nil {
		t.Error("a write to a read-only export succeeded")
	} else if se := (*Error)(nil); !errors.As(err, &se) {
		t.Errorf("a refused write broke the connection: %v", err)
	}
	if _, err := c.ReadAt(make([]byte, 10), 0); err != nil {
		t.Errorf("the connection is unusable after a refused write: %v", err)
	}
}
