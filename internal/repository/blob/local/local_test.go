package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/blobtest"
)

func TestBackend(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	handles := []blob.Handle{
		{Type: blob.ConfigFile},
		{Type: blob.KeyFile, Name: "aa01"},
		{Type: blob.PackFile, Name: "ab0123"},
		{Type: blob.PackFile, Name: "cd0123"},
		{Type: blob.IndexFile, Name: "ab0123"},
		{Type: blob.SnapshotFile, Name: "ff"},
	}
	for i, h := range handles {
		if err := l.Save(ctx, h, bytes.NewReader(bytes.Repeat([]byte{byte(i)}, 100+i))); err != nil {
			t.Fatalf("save %v: %v", h, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "cd", "cd0123")); err != nil {
		t.Fatalf("pack not under data/<2 hex>/: %v", err)
	}
	for i, h := range handles {
		fi, err := l.Stat(ctx, h)
		if err != nil || fi.Size != int64(100+i) {
			t.Fatalf("stat %v = %+v, %v", h, fi, err)
		}
		var got []byte
		err = l.Load(ctx, h, 10, 5, func(rd io.Reader) error {
			got, err = io.ReadAll(rd)
			return err
		})
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 10)) {
			t.Fatalf("load %v = %v, %v", h, got, err)
		}
	}
	// Stray files are not listed.
	os.WriteFile(filepath.Join(dir, "index", "README.txt"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "data", "ab", "cd0123"), []byte("misplaced"), 0o600)
	var packs []string
	l.List(ctx, blob.PackFile, func(fi blob.FileInfo) error { packs = append(packs, fi.Name); return nil })
	sort.Strings(packs)
	if len(packs) != 2 || packs[0] != "ab0123" || packs[1] != "cd0123" {
		t.Fatalf("packs = %v", packs)
	}
	var idx []string
	l.List(ctx, blob.IndexFile, func(fi blob.FileInfo) error { idx = append(idx, fi.Name); return nil })
	if len(idx) != 1 {
		t.Fatalf("index = %v", idx)
	}
	if err := l.Remove(ctx, handles[2]); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(ctx, handles[2]); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("second remove: %v, want fs.ErrNotExist", err)
	}
	if _, err := l.Stat(ctx, handles[2]); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat of removed: %v", err)
	}
	if n, _ := l.TempBytes(ctx); n != 0 {
		t.Fatalf("%d bytes of temporary files left by Save", n)
	}
}

func TestInvalidNames(t *testing.T) {
	l, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"", "a", "../../etc/passwd", "AB12", "ab/cd", "ab.tmp"} {
		h := blob.Handle{Type: blob.SnapshotFile, Name: name}
		if err := l.Save(ctx, h, bytes.NewReader(nil)); err == nil {
			t.Errorf("Save(%q) succeeded", name)
		}
		if _, err := l.Stat(ctx, h); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(%q) = %v, want an invalid-name error", name, err)
		}
	}
}

func TestRemoveStaleTemp(t *testing.T) {
	l, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fresh, _ := l.TempFile(ctx)
	fresh.Write(make([]byte, 10))
	stale, _ := l.TempFile(ctx)
	stale.Write(make([]byte, 100))
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale.Name(), old, old)
	freed, err := l.RemoveStaleTemp(ctx, time.Hour)
	if err != nil || freed != 100 {
		t.Fatalf("RemoveStaleTemp = %d, %v; want 100", freed, err)
	}
	if _, err := os.Stat(fresh.Name()); err != nil {
		t.Fatal("a fresh temporary file was removed")
	}
	l.RemoveTemp(fresh)
	l.RemoveTemp(stale)
}

// TestConformance runs the blob.Backend conformance suite on a directory.
func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Backend {
		l, err := Create(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if n, _ := l.TempBytes(context.Background()); n != 0 {
				t.Errorf("%d bytes of temporary files left", n)
			}
		})
		return l
	})
}

// TestSaveOfFileRemovedAtOnce: a file another process removes as soon as
// it is visible (a snapshot deleted right after a listing showed it) was
// saved; Save reports success, where it failed stamping the file before.
func TestSaveOfFileRemovedAtOnce(t *testing.T) {
	l, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testHookAfterRename = func(path string) {
		if err := os.Remove(path); err != nil {
			t.Error(err)
		}
	}
	defer func() { testHookAfterRename = nil }()
	h := blob.Handle{Type: blob.SnapshotFile, Name: strings.Repeat("cd", 16)}
	if err := l.Save(context.Background(), h, strings.NewReader("x")); err != nil {
		t.Fatalf("save of a file removed once visible: %v, want success", err)
	}
	if _, err := l.Stat(context.Background(), h); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat: %v, want the file gone", err)
	}
}

// TestModTimeNotBeforeVisible: a file whose sync and rename take long (a
// busy disk) must not show a ModTime from before it became visible. GC
// dates tombstones by the ModTime of the index file holding them; an
// operation that began after that time must have seen the file, or GC
// removes packs it deduplicated against (the torture test lost snapshots
// this way, about 1 run in 10 on a loaded machine).
func TestModTimeNotBeforeVisible(t *testing.T) {
	l, err := Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var visible time.Time
	testHookBeforeRename = func() {
		time.Sleep(200 * time.Millisecond)
		visible = time.Now()
	}
	defer func() { testHookBeforeRename = nil }()
	h := blob.Handle{Type: blob.IndexFile, Name: strings.Repeat("ab", 32)}
	if err := l.Save(context.Background(), h, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	fi, err := l.Stat(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	// The file system's clock is coarse (a tick): allow 10 ms.
	if fi.ModTime.Before(visible.Add(-10 * time.Millisecond)) {
		t.Fatalf("ModTime %v is %v before the file became visible", fi.ModTime, visible.Sub(fi.ModTime))
	}
}
