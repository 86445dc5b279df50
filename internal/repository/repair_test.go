package repository

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRepairLostIndex: with every index file lost, no chunk can be found
// (a restore refuses to start); Repair indexes the packs again from their
// trailers, and the backup restores byte-exactly, in this process and in
// a new one.
func TestRepairLostIndex(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 40*cs, 21, region{kind: "random", off: 0, n: 30 * cs}, region{kind: "text", off: 30 * cs, n: 10 * cs})
	id, _, _ := backup(t, r, []string{p}, nil)
	idx, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	for _, f := range idx {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	r = reopen(t, r, dir, testOpts)
	s, _ := r.LoadSnapshot(ctx, id)
	if err := r.CheckVolume(ctx, &s.Volumes[0]); err == nil {
		t.Fatal("every index file is gone, yet the volume is complete")
	}
	time.Sleep(10 * time.Millisecond) // packs older than the margin
	rep, err := r.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "data", "*", "*"))
	if len(rep.ReindexedPacks) != len(packs) || len(packs) < 2 || len(rep.Incomplete) != 0 || rep.Snapshots != 1 {
		t.Fatalf("repair %+v, want the %d packs indexed again and nothing incomplete", rep, len(packs))
	}
	if err := restoreEquals(t, r, id, p); err != nil {
		t.Fatal(err)
	}
	r = reopen(t, r, dir, testOpts)
	if err := restoreEquals(t, r, id, p); err != nil {
		t.Fatalf("a new process after repair: %v", err)
	}
}

// TestRepairDropsQuarantined: after verify quarantined a damaged copy,
// Repair rewrites the index without it (a process that never saw the
// quarantine record does not find the copy), names the snapshot that stays
// incomplete with the offset, and, once a backup stored the data again,
// names none.
func TestRepairDropsQuarantined(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	ctx := context.Background()
	a := filepath.Join(t.TempDir(), "a")
	writeImage(t, a, 6*cs, 22, region{kind: "random", off: 0, n: 6 * cs})
	id, vms, _ := backup(t, r, []string{a}, nil)
	bad := vms[0].Chunks[4]
	damageCopy(t, r, bad)
	if rep, err := r.Verify(ctx); err != nil || rep.Quarantined != 1 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	rep, err := r.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Quarantined != 1 || rep.IndexFilesRewritten == 0 || len(rep.Incomplete) != 1 || rep.Incomplete[0].Snapshot != id ||
		len(rep.Incomplete[0].Volumes) != 1 || len(rep.Incomplete[0].Volumes[0].Offsets) != 1 || rep.Incomplete[0].Volumes[0].Offsets[0] != 4*cs {
		t.Fatalf("repair %+v: want chunk 4 of %s incomplete", rep, id)
	}
	// Without the quarantine records, a new process still does not find
	// the damaged copy: the index no longer names it.
	r.Close()
	qs, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*"))
	if len(qs) == 0 {
		t.Fatal("no quarantine record")
	}
	for _, q := range qs {
		os.Remove(q)
	}
	r2, err := Open(dir, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	if r2.idx.has(bad) {
		t.Fatal("a process without the quarantine record finds the damaged copy in the index")
	}
	for i, c := range vms[0].Chunks {
		if i != 4 && !r2.idx.has(c) {
			t.Fatalf("repair dropped intact chunk %d", i)
		}
	}
	backup(t, r2, []string{a}, nil)
	rep, err = r2.Repair(ctx)
	if err != nil || len(rep.Incomplete) != 0 {
		t.Fatalf("repair after the data was stored again: %v %+v", err, rep)
	}
	if err := restoreEquals(t, r2, id, a); err != nil {
		t.Fatal(err)
	}
}
