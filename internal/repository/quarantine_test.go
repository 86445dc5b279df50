package repository

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/repository/blob"
)

// damageCopy flips a byte inside the stored copy of chunk id that the
// index of r reads, through the backend (on any storage), and returns
// that copy's pack.
func damageCopy(t testing.TB, r *Repository, id ChunkID) packID {
	t.Helper()
	loc, pack, ok := r.idx.lookup(id)
	if !ok {
		t.Fatalf("chunk %v not indexed", id)
	}
	flipPackByte(t, r.be, pack, int64(loc.offset)+100)
	return pack
}

// flipPackByte rewrites pack with the byte at off inverted.
func flipPackByte(t testing.TB, be blob.Backend, pack packID, off int64) {
	t.Helper()
	ctx := context.Background()
	var b []byte
	err := be.Load(ctx, packHandle(pack), 0, 0, func(rd io.Reader) error {
		var err error
		b, err = io.ReadAll(rd)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += int64(len(b))
	}
	b[off] ^= 0x40
	if err := be.Save(ctx, packHandle(pack), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

// testQuarantine: a chunk damaged in storage is found by verify and
// quarantined; another process stops deduplicating against it, so the
// next backup of the same data stores it again; that backup restores
// byte-exactly, and so does the damaged one (its chunk id names the data
// now stored again); a restore that meets a damaged copy quarantines it
// too. open2 opens a second process on the same storage.
func testQuarantine(t *testing.T, r *Repository, open2 func() *Repository) {
	ctx := context.Background()
	tmp := t.TempDir()
	a := filepath.Join(tmp, "a")
	writeImage(t, a, 10*cs, 1, region{kind: "random", off: 0, n: 6 * cs}, region{kind: "text", off: 6 * cs, n: 4 * cs})
	ida, vma, _ := backup(t, r, []string{a}, nil)
	bad := vma[0].Chunks[3]
	damageCopy(t, r, bad)

	r2 := open2() // loaded its index before the damage was found
	rep, err := r.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Quarantined != 1 || len(rep.Damage) != 1 || rep.Damage[0].Snapshot != ida ||
		len(rep.Damage[0].Volumes) != 1 || len(rep.Damage[0].Volumes[0].Offsets) != 1 || rep.Damage[0].Volumes[0].Offsets[0] != 3*cs {
		t.Fatalf("verify: %+v, want chunk 3 of %s quarantined", rep, ida)
	}
	// A restore of the damaged snapshot fails before it writes, naming
	// the offset.
	out := filepath.Join(tmp, "out")
	if err := os.WriteFile(out, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = restore(t, r, vma[0], out)
	var ue *UnrestorableError
	if !errors.As(err, &ue) || ue.Damaged != 1 || len(ue.Offsets) != 1 || ue.Offsets[0] != 3*cs || !strings.Contains(err.Error(), "196608") {
		t.Fatalf("restore of the damaged snapshot: %v", err)
	}
	if got, _ := os.ReadFile(out); string(got) != "keep me" {
		t.Fatal("a restore that could not finish touched the target")
	}

	// The other process applies the quarantine when it begins a backup:
	// the damaged chunk is stored again.
	b2 := r2.NewBackup()
	vm2, st, err := b2.Volume(ctx, a, 10*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.NewChunks != 1 {
		t.Fatalf("backup after quarantine stored %d new chunks, want 1 (the damaged one)", st.NewChunks)
	}
	vm2.VolumeID = "a"
	idb, err := b2.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm2}})
	if err != nil {
		t.Fatal(err)
	}
	b2.Abort()

	// Both the new backup and the damaged one restore byte-exactly, in
	// either process.
	for _, rr := range []*Repository{r2, r} {
		for _, id := range []string{idb, ida} {
			s, err := rr.LoadSnapshot(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if err := restore(t, rr, &s.Volumes[0], out); err != nil {
				t.Fatalf("restore %s after the data was stored again: %v", id, err)
			}
			if err := os.Truncate(out, s.Volumes[0].Size); err != nil {
				t.Fatal(err)
			}
			if fileSum(t, out) != fileSum(t, a) {
				t.Fatalf("snapshot %s restores other bytes", id)
			}
		}
	}
	if rep, err := r2.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("verify after healing: %v %+v", err, rep)
	}

	// A restore that meets a damaged copy (no verify before) quarantines
	// it and fails naming it; the next backup stores it again.
	c := vma[0].Chunks[7]
	damageCopy(t, r, c)
	s, _ := r.LoadSnapshot(ctx, ida)
	err = restore(t, r, &s.Volumes[0], out)
	if err == nil || !strings.Contains(err.Error(), c.String()) || !strings.Contains(err.Error(), "quarantined") {
		t.Fatalf("restore over a damaged copy: %v", err)
	}
	if r2.refresh(ctx) != nil || r2.idx.has(c) {
		t.Fatal("the other process still reads the copy a restore found damaged")
	}
	_, _, sts := backup(t, r2, []string{a}, nil)
	if sts[0].NewChunks != 1 {
		t.Fatalf("backup after a restore quarantined a chunk stored %d new chunks, want 1", sts[0].NewChunks)
	}
	if err := restore(t, r, &s.Volumes[0], out); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(out, s.Volumes[0].Size); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != fileSum(t, a) {
		t.Fatal("healed snapshot restores other bytes")
	}
}

func TestQuarantine(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	testQuarantine(t, r, func() *Repository {
		r2, err := Open(dir, password, testOpts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r2.Close() })
		return r2
	})
}

func TestS3Quarantine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	openBE := s3Bucket(t)
	r, err := InitBackend(ctx, openBE(), password, s3Opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	testQuarantine(t, r, func() *Repository {
		r2, err := OpenBackend(ctx, openBE(), password, s3Opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r2.Close() })
		return r2
	})
}

// TestVerifySnapshots: an incremental verify reads what the snapshots it
// is given reference, quarantines a damaged copy it meets, names the
// offsets of the snapshot it affects, and leaves other snapshots alone.
func TestVerifySnapshots(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	ctx := context.Background()
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	writeImage(t, a, 8*cs, 11, region{kind: "random", off: 0, n: 8 * cs})
	writeImage(t, b, 4*cs+100, 12, region{kind: "text", off: 0, n: 4*cs + 100})
	ida, vma, _ := backup(t, r, []string{a}, nil)
	idb, _, _ := backup(t, r, []string{b}, nil)
	damageCopy(t, r, vma[0].Chunks[5])

	rep, err := r.VerifySnapshots(ctx, []string{idb})
	if err != nil || !rep.OK() || rep.Snapshots != 1 || rep.Chunks != 5 || rep.Bytes != 4*cs+100 || rep.Quarantined != 0 {
		t.Fatalf("verify of the intact snapshot: %v %+v", err, rep)
	}
	gone := "00112233445566778899aabbccddeeff"
	rep, err = r.VerifySnapshots(ctx, []string{ida, gone})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Quarantined != 1 || len(rep.Damage) != 1 || rep.Damage[0].Snapshot != ida ||
		rep.Damage[0].Volumes[0].VolumeID != "a" || len(rep.Damage[0].Volumes[0].Offsets) != 1 || rep.Damage[0].Volumes[0].Offsets[0] != 5*cs ||
		len(rep.NotFound) != 1 || rep.NotFound[0] != gone {
		t.Fatalf("verify of the damaged snapshot: %+v", rep)
	}
	// Known now: a second run reads nothing of it and says the same.
	rep, err = r.VerifySnapshots(ctx, []string{ida})
	if err != nil || rep.Quarantined != 0 || len(rep.Damage) != 1 || rep.Chunks != 7 {
		t.Fatalf("second verify: %v %+v", err, rep)
	}
}
