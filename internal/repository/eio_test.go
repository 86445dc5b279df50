package repository

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/faulty"
)

// TestEIOEverywhere injects an I/O error (EIO) into one storage call at a
// time: every operation (save, load, stat, list, remove) on every object
// type, the first and the second such call of a working day (a backup, a
// delete, GC, a restore, verify). Whatever fails, no committed backup is
// lost (each restores byte-exactly from a fresh process afterwards, after
// GC), and an operation that fails says so with the error it met.
func TestEIOEverywhere(t *testing.T) {
	t.Parallel()
	ops := []faulty.Op{faulty.Save, faulty.Load, faulty.Stat, faulty.List, faulty.Remove}
	types := []blob.FileType{blob.PackFile, blob.IndexFile, blob.SnapshotFile, blob.LeaseFile, blob.KeyFile, blob.ConfigFile, blob.QuarantineFile}
	for _, op := range ops {
		for _, typ := range types {
			for _, nth := range []int{1, 2} {
				t.Run(fmt.Sprintf("%v-%v-%d", op, typ, nth), func(t *testing.T) {
					t.Parallel()
					eioDay(t, op, typ, nth)
				})
			}
		}
	}
}

var errInjected = fmt.Errorf("injected: %w", syscall.EIO)

func eioDay(t *testing.T, op faulty.Op, typ blob.FileType, nth int) {
	opts := testOpts
	opts.GCMargin = time.Millisecond
	a, dir := newRepo(t, opts)
	ctx := context.Background()
	work := t.TempDir()
	img := func(name string, seed uint64) string {
		p := filepath.Join(work, name)
		writeImage(t, p, 12*cs, seed, region{kind: "random", off: 0, n: 6 * cs}, region{kind: "random", off: 8 * cs, n: 4 * cs})
		return p
	}
	// Before the fault: a backup that must survive, and one to delete.
	keep, gone := img("keep", 1), img("gone", 2)
	keepID, keepVMs, _ := backup(t, a, []string{keep}, nil)
	goneID, _, _ := backup(t, a, []string{gone}, nil)
	committed := map[string]string{keepID: keep}

	r, fb := openFaulty(t, dir)
	fb.Fail(op, typ, nth, errInjected)
	var failures []error
	note := func(what string, err error) {
		if err == nil {
			return
		}
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s failed without the storage's error: %v", what, err)
		}
		failures = append(failures, fmt.Errorf("%s: %w", what, err))
	}

	// A working day under the fault.
	next := img("next", 3)
	b := r.NewBackup()
	vm, _, err := b.Volume(ctx, next, 12*cs, keepVMs[0], nil)
	note("backup", err)
	if err == nil {
		id, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}})
		note("commit", err)
		if err == nil {
			committed[id] = next
		}
	}
	b.Abort()
	note("delete", r.DeleteSnapshot(ctx, goneID))
	_, err = r.GC(ctx)
	note("gc", err)
	out := filepath.Join(work, "out")
	note("restore", restore(t, r, keepVMs[0], out))
	_, err = r.Verify(ctx)
	note("verify", err)
	r.Close()

	// Afterwards, without faults, a fresh process: every committed backup
	// restores byte-exactly, also after GC.
	time.Sleep(5 * time.Millisecond)
	c, err := Open(dir, password, opts)
	if err != nil {
		t.Fatalf("open after the fault (%v): %v", failures, err)
	}
	defer c.Close()
	for range 2 {
		if _, err := c.GC(ctx); err != nil {
			t.Fatalf("GC after the fault: %v", err)
		}
	}
	for id, src := range committed {
		s, err := c.LoadSnapshot(ctx, id)
		if err != nil {
			t.Fatalf("committed backup %s after the fault (%v): %v", id, failures, err)
		}
		p := filepath.Join(work, "check-"+id)
		if err := restore(t, c, &s.Volumes[0], p); err != nil {
			t.Fatalf("committed backup %s after the fault (%v): %v", id, failures, err)
		}
		if fileSum(t, p) != fileSum(t, src) {
			t.Fatalf("committed backup %s restores to other bytes after the fault (%v)", id, failures)
		}
		os.Remove(p)
	}
	rep, err := c.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("verify after the fault (%v): %v %v", failures, err, rep.Problems)
	}
}
