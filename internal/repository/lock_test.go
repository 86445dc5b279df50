package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Two Repository values opened on one directory stand for two processes:
// flock locks belong to an open file, so they exclude each other exactly as
// two processes would.
func openTwice(t *testing.T) (a, b *Repository) {
	t.Helper()
	a, dir := newRepo(t, testOpts)
	b, err := Open(dir, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// TestGCInOtherProcessWaitsForBackup: while one process has stored chunks of
// a backup it has not committed, another process's GC must not run.
func TestGCInOtherProcessWaitsForBackup(t *testing.T) {
	a, b := openTwice(t)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 40*cs, 11, region{kind: "random", off: 0, n: 40 * cs})

	bk := a.NewBackup()
	vm, _, err := bk.Volume(ctx, p, 40*cs, nil, nil) // fills and writes several 1 MiB packs
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.GC(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("GC in the other process while a backup runs: %v, want ErrBusy", err)
	}
	id, err := bk.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.GC(ctx); err != nil {
		t.Fatalf("GC after the backup: %v", err)
	}
	s, err := b.LoadSnapshot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := restore(t, b, &s.Volumes[0], out); err != nil {
		t.Fatalf("the other process restores the backup: %v", err)
	}
	if fileSum(t, out) != fileSum(t, p) {
		t.Fatal("restored bytes differ")
	}
}

// TestIndexReloadedAfterOtherProcessGC: a process must not deduplicate
// against chunks that another process's GC deleted since it loaded its
// index; it stores them again, and the new backup restores.
func TestIndexReloadedAfterOtherProcessGC(t *testing.T) {
	a, b := openTwice(t)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 30*cs, 12, region{kind: "random", off: 0, n: 30 * cs})

	first, _, _ := backup(t, a, []string{p}, nil)
	if err := b.DeleteSnapshot(ctx, first); err != nil {
		t.Fatal(err)
	}
	st, err := b.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksDeleted == 0 {
		t.Fatal("GC deleted nothing; the test needs the packs gone")
	}
	// a's memory index still names the deleted packs; the same data again:
	second, vms, sts := backup(t, a, []string{p}, nil)
	if sts[0].NewChunks == 0 {
		t.Fatal("the second backup stored no chunk: it deduplicated against deleted packs")
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := restore(t, a, vms[0], out); err != nil {
		t.Fatalf("restore of backup %s: %v", second, err)
	}
	if fileSum(t, out) != fileSum(t, p) {
		t.Fatal("restored bytes differ")
	}
	// The other process sees the packs written since it loaded its index.
	rep, err := b.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	if err := restore(t, b, vms[0], out); err != nil {
		t.Fatalf("restore in the other process of backup %s: %v", second, err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(a.be.Location()), filepath.Base(a.be.Location()), "lock")); err != nil {
		t.Fatalf("no lock file: %v", err)
	}
}
