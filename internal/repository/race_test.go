package repository

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/faulty"
	"github.com/csbs/csbs/internal/repository/blob/local"
)

// The tests of this file reproduce races between processes sharing one
// repository (issue 11). Two Repository values on one directory stand for
// two processes; where a process must die at an exact point, the test binary
// runs itself as a child that kills itself with SIGKILL.

// openTwice returns two Repository values on one new repository, as two
// processes would have.
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

// openFaulty opens the repository in dir through a fault-injecting backend.
func openFaulty(t testing.TB, dir string) (*Repository, *faulty.Backend) {
	t.Helper()
	l, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fb := faulty.Wrap(l)
	r, err := OpenBackend(context.Background(), fb, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, fb
}

// gcUntilError runs GC until it fails (at most 4 times: a collection may
// need more than one run to delete garbage) and returns the error.
func gcUntilError(ctx context.Context, r *Repository) error {
	for range 4 {
		if _, err := r.GC(ctx); err != nil {
			return err
		}
	}
	return nil
}

// checkRestores restores vm with r and compares it with the image at p.
func checkRestores(t *testing.T, r *Repository, vm *VolumeManifest, p, who string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	if err := restore(t, r, vm, out); err != nil {
		t.Fatalf("%s: restore of a committed backup: %v", who, err)
	}
	if fileSum(t, out) != fileSum(t, p) {
		t.Fatalf("%s: restored bytes differ", who)
	}
}

// TestRaceGCFailsPartWay (race 1): a GC whose pack removal fails part-way
// must leave its own process's index consistent: the next backup of the
// same data must not deduplicate against packs the GC deleted.
func TestRaceGCFailsPartWay(t *testing.T) {
	t.Parallel()
	_, dir := newRepo(t, testOpts)
	r, fb := openFaulty(t, dir)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 60*cs, 21, region{kind: "random", off: 0, n: 60 * cs})
	first, _, _ := backup(t, r, []string{p}, nil)
	if err := r.DeleteSnapshot(ctx, first); err != nil {
		t.Fatal(err)
	}
	fb.Fail(faulty.Remove, blob.PackFile, 2, errors.New("injected: storage refused the removal"))
	if err := gcUntilError(ctx, r); err == nil {
		t.Fatal("GC never reached the failing removal")
	}
	fb.Reset()
	_, vms, _ := backup(t, r, []string{p}, nil)
	checkRestores(t, r, vms[0], p, "the process whose GC failed")
	r2, _ := openFaulty(t, dir)
	checkRestores(t, r2, vms[0], p, "a fresh process")
}

// TestRaceGCKilled (race 2): a GC process killed mid-way (after deleting
// some packs) must not leave another process deduplicating against them.
func TestRaceGCKilled(t *testing.T) {
	if dir := os.Getenv("CSBS_TEST_GC_CHILD"); dir != "" {
		gcChild(dir)
		return
	}
	t.Parallel()
	a, dir := newRepo(t, testOpts)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 60*cs, 22, region{kind: "random", off: 0, n: 60 * cs})
	first, _, _ := backup(t, a, []string{p}, nil)
	if err := a.DeleteSnapshot(ctx, first); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRaceGCKilled$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CSBS_TEST_GC_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the GC child was not killed at its second pack removal: %v\n%s", err, out)
	}
	// a loaded its index before the child's GC; the same data again:
	_, vms, _ := backup(t, a, []string{p}, nil)
	checkRestores(t, a, vms[0], p, "the process that outlived the GC")
	b, err := Open(dir, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	checkRestores(t, b, vms[0], p, "a fresh process")
}

// gcChild runs GC on dir and SIGKILLs itself at the second pack removal.
func gcChild(dir string) {
	l, err := local.Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fb := faulty.Wrap(l)
	fb.Add(faulty.Rule{Op: faulty.Remove, Type: blob.PackFile, Nth: 2, Hook: func(context.Context, blob.Handle) error {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}})
	r, err := OpenBackend(context.Background(), fb, password, testOpts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	err = gcUntilError(context.Background(), r)
	fmt.Fprintln(os.Stderr, "GC ended without reaching the second pack removal:", err)
	os.Exit(3)
}

// TestRaceFinalizeAfterAbort (race 3): packs still being finalized when a
// backup is aborted must not be deleted by another process's GC (and then
// be marked durable when their index is written).
func TestRaceFinalizeAfterAbort(t *testing.T) {
	t.Parallel()
	_, dir := newRepo(t, testOpts)
	a, fb := openFaulty(t, dir)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 40*cs, 23, region{kind: "random", off: 0, n: 40 * cs})

	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	blocked := make(chan struct{}, 16)
	fb.Add(faulty.Rule{Op: faulty.Save, Type: blob.IndexFile, Hook: func(ctx context.Context, h blob.Handle) error {
		blocked <- struct{}{}
		<-release
		return nil
	}})
	bk := a.NewBackup()
	if _, _, err := bk.Volume(ctx, p, 40*cs, nil, nil); err != nil {
		t.Fatal(err)
	}
	<-blocked // a full pack is saved; its index file is not yet
	bk.Abort()

	b, err := Open(dir, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range 3 {
		if _, err := b.GC(ctx); err != nil {
			t.Fatal(err)
		}
	}
	unblock()
	if err := a.packer.flush(); err != nil {
		t.Fatal(err)
	}
	_, vms, _ := backup(t, a, []string{p}, nil)
	checkRestores(t, a, vms[0], p, "the process that aborted")
	checkRestores(t, b, vms[0], p, "the process that ran GC")
}

// TestRaceOtherProcessChunks (race 6): a process that did not make a backup
// accepts its restore, and deduplicates against the chunks it stored.
func TestRaceOtherProcessChunks(t *testing.T) {
	t.Parallel()
	a, b := openTwice(t)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 30*cs, 24, region{kind: "random", off: 0, n: 30 * cs})
	_, vms, _ := backup(t, a, []string{p}, nil)
	if err := b.CheckVolume(ctx, vms[0]); err != nil {
		t.Fatalf("the other process refuses the restore of a committed backup: %v", err)
	}
	_, _, sts := backup(t, b, []string{p}, nil)
	if sts[0].NewChunks != 0 {
		t.Fatalf("the other process stored %d of %d chunks again", sts[0].NewChunks, sts[0].Chunks)
	}
	checkRestores(t, b, vms[0], p, "the other process")
}
