// Package blobtest is a conformance suite for blob.Backend: every
// implementation runs Run against a real instance of its storage (a
// directory, an S3 bucket) so that the repository can rely on the contract
// stated in package blob whatever it is stored in.
//
// The suite checks, for every object type: Save then Stat, Load of the whole
// object and of ranges (including ranges past the end, which deliver fewer
// bytes), Save over an existing object, List (only the objects of the type,
// with their sizes), Remove, and the fs.ErrNotExist errors of Stat, Load and
// Remove on a missing object; that invalid names are refused; that a Save
// whose reader fails leaves no object; concurrent Saves, Loads and Lists; and
// that Stat and List tell one ModTime, which a new Save moves forward.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
)

// Run runs the suite on backends made by newBackend, each of which must be
// empty. newBackend is called once per subtest; it registers its own cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) blob.Backend) {
	t.Run("SaveStatLoad", func(t *testing.T) { testSaveStatLoad(t, newBackend(t)) })
	t.Run("Ranges", func(t *testing.T) { testRanges(t, newBackend(t)) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, newBackend(t)) })
	t.Run("ListRemove", func(t *testing.T) { testListRemove(t, newBackend(t)) })
	t.Run("Missing", func(t *testing.T) { testMissing(t, newBackend(t)) })
	t.Run("InvalidNames", func(t *testing.T) { testInvalidNames(t, newBackend(t)) })
	t.Run("FailedSave", func(t *testing.T) { testFailedSave(t, newBackend(t)) })
	t.Run("Large", func(t *testing.T) { testLarge(t, newBackend(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newBackend(t)) })
	t.Run("ModTime", func(t *testing.T) { testModTime(t, newBackend(t)) })
}

// content returns n deterministic pseudo-random bytes for seed.
func content(seed uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func load(ctx context.Context, be blob.Backend, h blob.Handle, length int, offset int64) ([]byte, error) {
	var got []byte
	err := be.Load(ctx, h, length, offset, func(rd io.Reader) error {
		var err error
		got, err = io.ReadAll(rd)
		return err
	})
	return got, err
}

func mustSave(t *testing.T, be blob.Backend, h blob.Handle, b []byte) {
	t.Helper()
	if err := be.Save(context.Background(), h, bytes.NewReader(b)); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
}

func list(t *testing.T, be blob.Backend, ft blob.FileType) map[string]int64 {
	t.Helper()
	m := make(map[string]int64)
	err := be.List(context.Background(), ft, func(fi blob.FileInfo) error {
		if _, dup := m[fi.Name]; dup {
			return fmt.Errorf("%s listed twice", fi.Name)
		}
		m[fi.Name] = fi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("list %v: %v", ft, err)
	}
	return m
}

// handles has one object of each type; two packs with different first
// digits so a layout by prefix directory is exercised.
var handles = []blob.Handle{
	{Type: blob.ConfigFile},
	{Type: blob.KeyFile, Name: "aa01"},
	{Type: blob.PackFile, Name: "ab0123"},
	{Type: blob.PackFile, Name: "cd0123"},
	{Type: blob.IndexFile, Name: "ab0123"},
	{Type: blob.SnapshotFile, Name: "ff"},
	{Type: blob.QuarantineFile, Name: "0a"},
	{Type: blob.DamagedFile, Name: "cd0123"},
}

func testSaveStatLoad(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	for i, h := range handles {
		mustSave(t, be, h, content(uint64(i), 100+i))
	}
	for i, h := range handles {
		want := content(uint64(i), 100+i)
		fi, err := be.Stat(ctx, h)
		if err != nil || fi.Size != int64(len(want)) {
			t.Fatalf("stat %v = %+v, %v; want size %d", h, fi, err, len(want))
		}
		got, err := load(ctx, be, h, 0, 0)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("load %v: %d bytes, %v; want the %d bytes saved", h, len(got), err, len(want))
		}
	}
	// An empty object is an object.
	h := blob.Handle{Type: blob.SnapshotFile, Name: "00"}
	mustSave(t, be, h, nil)
	if fi, err := be.Stat(ctx, h); err != nil || fi.Size != 0 {
		t.Fatalf("stat of an empty object = %+v, %v", fi, err)
	}
	if got, err := load(ctx, be, h, 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("load of an empty object = %d bytes, %v", len(got), err)
	}
}

func testRanges(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	h := blob.Handle{Type: blob.PackFile, Name: "0123abcd"}
	data := content(7, 10000)
	mustSave(t, be, h, data)
	for _, c := range []struct {
		length int
		offset int64
		want   []byte
	}{
		{0, 0, data},
		{10, 0, data[:10]},
		{10, 5, data[5:15]},
		{0, 9000, data[9000:]},
		{1, 9999, data[9999:]},
		{100, 9950, data[9950:]}, // past the end: fewer bytes
		{0, 10000, nil},          // at the end
		{10, 20000, nil},         // beyond the end
	} {
		got, err := load(ctx, be, h, c.length, c.offset)
		if err != nil {
			t.Fatalf("load length %d at %d: %v", c.length, c.offset, err)
		}
		if !bytes.Equal(got, c.want) {
			t.Fatalf("load length %d at %d: %d bytes, want %d", c.length, c.offset, len(got), len(c.want))
		}
	}
	// fn's error is returned as is.
	sentinel := errors.New("stop")
	err := be.Load(ctx, h, 10, 0, func(io.Reader) error { return sentinel })
	if !errors.Is(err, sentinel) {
		t.Fatalf("Load returned %v, want fn's error", err)
	}
}

func testOverwrite(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	h := blob.Handle{Type: blob.ConfigFile}
	mustSave(t, be, h, content(1, 500))
	mustSave(t, be, h, content(2, 300))
	got, err := load(ctx, be, h, 0, 0)
	if err != nil || !bytes.Equal(got, content(2, 300)) {
		t.Fatalf("after overwrite: %d bytes, %v; want the second content", len(got), err)
	}
}

// testModTime: Stat and List tell the same ModTime, and saving again moves
// it forward (the repository's leases and tombstones rely on both). The
// pause covers stores whose times are whole seconds.
func testModTime(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	h := blob.Handle{Type: blob.LeaseFile, Name: "0123456789abcdef"}
	mustSave(t, be, h, content(1, 10))
	first, err := be.Stat(ctx, h)
	if err != nil || first.ModTime.IsZero() {
		t.Fatalf("stat: %+v %v; want a ModTime", first, err)
	}
	if d := time.Since(first.ModTime); d > time.Hour || d < -time.Hour {
		t.Fatalf("ModTime %v is far from now", first.ModTime)
	}
	var listed time.Time
	err = be.List(ctx, h.Type, func(fi blob.FileInfo) error {
		if fi.Name == h.Name {
			listed = fi.ModTime
		}
		return nil
	})
	if err != nil || !listed.Equal(first.ModTime) {
		t.Fatalf("list tells ModTime %v, stat %v (%v)", listed, first.ModTime, err)
	}
	time.Sleep(1100 * time.Millisecond)
	mustSave(t, be, h, content(2, 10))
	second, err := be.Stat(ctx, h)
	if err != nil || !second.ModTime.After(first.ModTime) {
		t.Fatalf("ModTime after saving again: %v, before %v (%v)", second.ModTime, first.ModTime, err)
	}
}

func testListRemove(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	for i, h := range handles {
		mustSave(t, be, h, content(uint64(i), 100+i))
	}
	for _, ft := range blob.Types {
		want := make(map[string]int64)
		for i, h := range handles {
			if h.Type == ft {
				name := h.Name
				if ft == blob.ConfigFile {
					name = "config"
				}
				want[name] = int64(100 + i)
			}
		}
		got := list(t, be, ft)
		if len(got) != len(want) {
			t.Fatalf("list %v = %v, want %v", ft, got, want)
		}
		for n, s := range want {
			if got[n] != s {
				t.Fatalf("list %v = %v, want %v", ft, got, want)
			}
		}
	}
	// fn's error stops the listing and is returned.
	sentinel := errors.New("stop")
	calls := 0
	err := be.List(ctx, blob.PackFile, func(blob.FileInfo) error { calls++; return sentinel })
	if !errors.Is(err, sentinel) || calls != 1 {
		t.Fatalf("List with a failing fn: %v after %d calls, want fn's error after 1", err, calls)
	}
	for _, h := range handles {
		if err := be.Remove(ctx, h); err != nil {
			t.Fatalf("remove %v: %v", h, err)
		}
		if _, err := be.Stat(ctx, h); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("stat of removed %v: %v, want fs.ErrNotExist", h, err)
		}
	}
	for _, ft := range blob.Types {
		if got := list(t, be, ft); len(got) != 0 {
			t.Fatalf("list %v after removing everything = %v", ft, got)
		}
	}
}

func testMissing(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	for _, h := range handles {
		if _, err := be.Stat(ctx, h); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat of missing %v: %v, want fs.ErrNotExist", h, err)
		}
		called := false
		err := be.Load(ctx, h, 0, 0, func(io.Reader) error { called = true; return nil })
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("load of missing %v: %v, want fs.ErrNotExist", h, err)
		}
		if called {
			t.Errorf("load of missing %v called fn", h)
		}
		if err := be.Remove(ctx, h); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("remove of missing %v: %v, want fs.ErrNotExist", h, err)
		}
	}
}

func testInvalidNames(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	for _, name := range []string{"", "a", "../../etc/passwd", "AB12", "ab/cd", "ab.tmp"} {
		h := blob.Handle{Type: blob.SnapshotFile, Name: name}
		if err := be.Save(ctx, h, bytes.NewReader([]byte("x"))); err == nil {
			t.Errorf("Save(%q) succeeded", name)
		}
		if _, err := be.Stat(ctx, h); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(%q) = %v, want an invalid-name error", name, err)
		}
		if err := be.Remove(ctx, h); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Remove(%q) = %v, want an invalid-name error", name, err)
		}
	}
	if got := list(t, be, blob.SnapshotFile); len(got) != 0 {
		t.Fatalf("invalid saves left objects: %v", got)
	}
}

// failingReader delivers n bytes, then fails.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}

func testFailedSave(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	readErr := errors.New("source disk failed")
	for _, n := range []int{0, 1000, 6 << 20} {
		h := blob.Handle{Type: blob.PackFile, Name: fmt.Sprintf("ee%04x", n)}
		err := be.Save(ctx, h, &failingReader{n: n, err: readErr})
		if err == nil {
			t.Fatalf("Save from a reader failing after %d bytes succeeded", n)
		}
		if _, err := be.Stat(ctx, h); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("after a failed Save of %d bytes, stat = %v; want fs.ErrNotExist (no partial object)", n, err)
		}
	}
	// A failed Save over an existing object leaves the old one.
	h := blob.Handle{Type: blob.ConfigFile}
	mustSave(t, be, h, content(3, 200))
	if err := be.Save(ctx, h, &failingReader{n: 50, err: readErr}); err == nil {
		t.Fatal("failing Save over config succeeded")
	}
	if got, err := load(ctx, be, h, 0, 0); err != nil || !bytes.Equal(got, content(3, 200)) {
		t.Fatalf("after a failed overwrite: %d bytes, %v; want the old content", len(got), err)
	}
	// A cancelled context fails the Save without an object either.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	hc := blob.Handle{Type: blob.SnapshotFile, Name: "cc"}
	if err := be.Save(cctx, hc, bytes.NewReader(content(4, 100))); err == nil {
		t.Fatal("Save with a cancelled context succeeded")
	}
	if _, err := be.Stat(ctx, hc); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after a cancelled Save, stat = %v; want fs.ErrNotExist", err)
	}
}

// testLarge saves a pack-sized object through an *os.File-like reader and
// through a plain reader of unknown length (large enough for a multipart
// upload on object storage) and reads ranges of it back.
func testLarge(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	data := content(11, 40<<20+12345)
	h1 := blob.Handle{Type: blob.PackFile, Name: "1a2b"}
	h2 := blob.Handle{Type: blob.PackFile, Name: "2b3c"}
	mustSave(t, be, h1, data)
	if err := be.Save(ctx, h2, io.MultiReader(bytes.NewReader(data[:1<<20]), bytes.NewReader(data[1<<20:]))); err != nil {
		t.Fatalf("save of unknown length: %v", err)
	}
	for _, h := range []blob.Handle{h1, h2} {
		fi, err := be.Stat(ctx, h)
		if err != nil || fi.Size != int64(len(data)) {
			t.Fatalf("stat %v = %+v, %v; want %d bytes", h, fi, err, len(data))
		}
		for _, off := range []int64{0, 16 << 20, int64(len(data)) - 4096} {
			got, err := load(ctx, be, h, 4096, off)
			if err != nil || !bytes.Equal(got, data[off:off+4096]) {
				t.Fatalf("load %v at %d: %d bytes, %v", h, off, len(got), err)
			}
		}
		got, err := load(ctx, be, h, 0, 0)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("load all of %v: %d bytes, %v", h, len(got), err)
		}
	}
}

func testConcurrent(t *testing.T, be blob.Backend) {
	ctx := context.Background()
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Go(func() {
			h := blob.Handle{Type: blob.IndexFile, Name: fmt.Sprintf("%04x", i)}
			want := content(uint64(i), 1000+i*100)
			if err := be.Save(ctx, h, bytes.NewReader(want)); err != nil {
				errs <- err
				return
			}
			got, err := load(ctx, be, h, 0, 0)
			if err != nil {
				errs <- err
			} else if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("%v: read back %d bytes that differ", h, len(got))
			}
		})
		wg.Go(func() {
			if err := be.List(ctx, blob.IndexFile, func(blob.FileInfo) error { return nil }); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := list(t, be, blob.IndexFile)
	names := make([]string, 0, len(got))
	for name, size := range got {
		names = append(names, name)
		var i int
		fmt.Sscanf(name, "%x", &i)
		if size != int64(1000+i*100) {
			t.Errorf("index %s listed with size %d, want %d", name, size, 1000+i*100)
		}
	}
	slices.Sort(names)
	if len(names) != n {
		t.Fatalf("listed %d index objects after %d concurrent saves: %v", len(names), n, names)
	}
}
