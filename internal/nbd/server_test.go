package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// memDisk is a Disk in memory whose zero blocks of blk bytes are holes.
type memDisk struct {
	b   []byte
	blk int64
}

func (d *memDisk) Size() int64 { return int64(len(d.b)) }

func (d *memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.b)) {
		return 0, io.EOF
	}
	n := copy(p, d.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *memDisk) Extents(off, n int64) []Extent {
	end := min(off+n, d.Size())
	var out []Extent
	for off < end {
		next := min((off/d.blk+1)*d.blk, end)
		data := !bytes.Equal(d.b[off/d.blk*d.blk:min((off/d.blk+1)*d.blk, d.Size())], make([]byte, min(d.blk, d.Size()-off/d.blk*d.blk)))
		flags := uint32(StateHole | StateZero)
		if data {
			flags = 0
		}
		if k := len(out) - 1; k >= 0 && out[k].Flags == flags {
			out[k].Len += next - off
		} else {
			out = append(out, Extent{Off: off, Len: next - off, Flags: flags})
		}
		off = next
	}
	return out
}

// newDisk is 8 MiB + 512 bytes: random data, holes, and data across
// block borders.
func newDisk() *memDisk {
	d := &memDisk{b: make([]byte, 8<<20+512), blk: 64 << 10}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, r := range [][2]int{{0, 100 << 10}, {1 << 20, 5 << 10}, {3<<20 - 100, 300}, {8 << 20, 512}} {
		for i := r[0]; i < r[0]+r[1]; i++ {
			d.b[i] = byte(rng.Uint32())
		}
	}
	return d
}

// serve starts a server of d on a unix socket and returns its NBD URI.
func serve(t *testing.T, d Disk) (uri, sock string) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Disk: d, Name: "disk"}).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "nbd+unix:///disk?socket=" + sock, sock
}

func needQEMU(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("qemu-img")
	if err != nil {
		if os.Getenv("CSBS_REQUIRE_QEMU") == "1" {
			t.Fatal("qemu-img not found and CSBS_REQUIRE_QEMU=1 (Debian package qemu-utils)")
		}
		t.Skip("qemu-img not found (Debian package qemu-utils); scripts/test.sh installs it")
	}
	return p
}

// TestQEMUReads: qemu-img reads the export byte for byte (compare,
// convert) and sees its holes through block status (map).
func TestQEMUReads(t *testing.T) {
	qimg := needQEMU(t)
	d := newDisk()
	uri, _ := serve(t, d)
	raw := filepath.Join(t.TempDir(), "want.raw")
	if err := os.WriteFile(raw, d.b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(qimg, "compare", "-f", "raw", "-F", "raw", raw, uri).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, out)
	}
	got := filepath.Join(t.TempDir(), "got.raw")
	if out, err := exec.Command(qimg, "convert", "-f", "raw", "-O", "raw", uri, got).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, d.b) {
		t.Fatal("qemu-img convert of the export differs from the disk")
	}
	out, err := exec.Command(qimg, "map", "--output=json", "-f", "raw", uri).Output()
	if err != nil {
		t.Fatalf("qemu-img map: %v", err)
	}
	var m []struct {
		Start, Length int64
		Data, Zero    bool
	}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var dataBytes, end int64
	for _, e := range m {
		if e.Data {
			dataBytes += e.Length
		}
		end = e.Start + e.Length
	}
	var want int64
	for _, e := range d.Extents(0, d.Size()) {
		if e.Flags == 0 {
			want += e.Len
		}
	}
	if end != d.Size() || dataBytes != want {
		t.Errorf("qemu-img map sees %d data bytes up to %d; the disk has %d of %d", dataBytes, end, want, d.Size())
	}
	// A write is refused: the export is read-only.
	if qio, err := exec.LookPath("qemu-io"); err == nil {
		if out, err := exec.Command(qio, "-f", "raw", "-c", "write -P 0xab 0 4k", uri).CombinedOutput(); err == nil && !bytes.Contains(out, []byte("ermission")) && !bytes.Contains(out, []byte("read-only")) && !bytes.Contains(out, []byte("Read-only")) {
			t.Errorf("qemu-io write to the export: %s", out)
		}
	}
}

// rawClient negotiates with NBD_OPT_EXPORT_NAME and simple replies.
func rawClient(t *testing.T, sock string) (net.Conn, int64) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hello := make([]byte, 18)
	if _, err := io.ReadFull(c, hello); err != nil || binary.BigEndian.Uint64(hello) != nbdMagic {
		t.Fatalf("hello %x: %v", hello, err)
	}
	b := put32(nil, clientFixed|clientNoZeros)
	b = put32(put32(put64(b, optMagic), optExportName), 4)
	c.Write(append(b, "disk"...))
	info := make([]byte, 10)
	if _, err := io.ReadFull(c, info); err != nil {
		t.Fatal(err)
	}
	return c, int64(binary.BigEndian.Uint64(info))
}

func request(c net.Conn, typ uint16, cookie, off uint64, n uint32) {
	b := put16(put16(put32(nil, requestMagic), 0), typ)
	c.Write(put32(put64(put64(b, cookie), off), n))
}

// TestSimpleRepliesAndDisconnects: an old-style client (export name,
// simple replies) reads, gets EPERM for a write and EINVAL past the end; a
// client that hangs up in the middle of a read leaves the server serving.
func TestSimpleRepliesAndDisconnects(t *testing.T) {
	d := newDisk()
	_, sock := serve(t, d)
	c, size := rawClient(t, sock)
	if size != d.Size() {
		t.Fatalf("size %d, want %d", size, d.Size())
	}
	request(c, cmdRead, 7, 3<<20-200, 4096)
	hdr := make([]byte, 16)
	io.ReadFull(c, hdr)
	data := make([]byte, 4096)
	io.ReadFull(c, data)
	if binary.BigEndian.Uint32(hdr) != simpleReplyMagic || binary.BigEndian.Uint32(hdr[4:]) != 0 || binary.BigEndian.Uint64(hdr[8:]) != 7 ||
		!bytes.Equal(data, d.b[3<<20-200:3<<20-200+4096]) {
		t.Fatalf("read reply %x", hdr)
	}
	for _, tc := range []struct {
		typ  uint16
		off  uint64
		n    uint32
		errn uint32
	}{{cmdWrite, 0, 0, errPerm}, {cmdTrim, 0, 4096, errPerm}, {cmdRead, uint64(d.Size()) - 10, 20, errInval}, {42, 0, 0, errNotSup}} {
		request(c, tc.typ, 9, tc.off, tc.n)
		io.ReadFull(c, hdr)
		if got := binary.BigEndian.Uint32(hdr[4:]); got != tc.errn {
			t.Errorf("command %d: error %d, want %d", tc.typ, got, tc.errn)
		}
	}
	// Hang up right after asking for 8 MiB.
	request(c, cmdRead, 10, 0, 8<<20)
	c.Close()
	c2, _ := rawClient(t, sock)
	defer c2.Close()
	request(c2, cmdRead, 11, 0, 16)
	io.ReadFull(c2, hdr)
	io.ReadFull(c2, data[:16])
	if binary.BigEndian.Uint64(hdr[8:]) != 11 || !bytes.Equal(data[:16], d.b[:16]) {
		t.Errorf("the server does not serve after a client hung up mid-read")
	}
}
