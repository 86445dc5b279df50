package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
)

// GC must not launder damage: these fail on a GC that copies sealed blobs
// unchecked, keeps whichever copy it meets, and deletes what it cannot
// read.

// restoreEquals restores snapshot id and compares it with want.
func restoreEquals(t *testing.T, r *Repository, id, want string) error {
	t.Helper()
	s, err := r.LoadSnapshot(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := restore(t, r, &s.Volumes[0], out); err != nil {
		return err
	}
	if err := os.Truncate(out, s.Volumes[0].Size); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != fileSum(t, want) {
		t.Fatalf("snapshot %s restores other bytes than %s", id, want)
	}
	return nil
}

// TestGCKeepsIntactCopy: a chunk stored twice (once in a pack GC marked,
// once again by a backup that no longer deduplicated against it) whose
// live copy is damaged: GC removing the marked pack must keep the intact
// copy.
func TestGCKeepsIntactCopy(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	ctx := context.Background()
	a := filepath.Join(t.TempDir(), "a")
	writeImage(t, a, 6*cs, 3, region{kind: "random", off: 0, n: 6 * cs})
	id1, vms, _ := backup(t, r, []string{a}, nil)
	time.Sleep(10 * time.Millisecond)
	// A running backup holds the marks GC makes now from being removed.
	b := r.NewBackup()
	defer b.Abort()
	if err := r.DeleteSnapshot(ctx, id1); err != nil {
		t.Fatal(err)
	}
	if st, err := r.GC(ctx); err != nil || st.PacksMarked != 1 || st.PacksDeleted != 0 {
		t.Fatalf("GC: %+v %v, want one pack marked and none removed", st, err)
	}
	// The backup stores the marked chunks again.
	vm, st, err := b.Volume(ctx, a, 6*cs, nil, nil)
	if err != nil || st.NewChunks != 6 {
		t.Fatalf("backup over marked chunks: %+v %v, want 6 new chunks", st, err)
	}
	vm.VolumeID = "a"
	id2, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}})
	if err != nil {
		t.Fatal(err)
	}
	b.Abort()
	// The new pack is finished (Commit did not wait: the marked copy was
	// still readable).
	if err := r.packer.flush(); err != nil {
		t.Fatal(err)
	}
	damageCopy(t, r, vms[0].Chunks[2]) // the live copy, the one a restore reads, the one a restore reads

	gst, err := r.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gst.Quarantined != 1 {
		t.Fatalf("GC %+v: want the damaged copy it kept found and quarantined", gst)
	}
	if err := restoreEquals(t, r, id2, a); err != nil {
		t.Fatalf("after GC removed the marked pack: %v", err)
	}
	if rep, err := r.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// TestGCRepackAuthenticates: a pack rewritten by GC holds a damaged
// referenced chunk. The copy is not made (it would be a fresh pack holding
// damage no one knows of): the chunk is quarantined, the old pack goes to
// damaged/ instead of being removed, the restore fails naming the offset,
// and the next backup of the data heals it.
func TestGCRepackAuthenticates(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	ctx := context.Background()
	tmp := t.TempDir()
	a, c := filepath.Join(tmp, "a"), filepath.Join(tmp, "c")
	writeImage(t, a, 12*cs, 4, region{kind: "random", off: 0, n: 12 * cs})
	writeImage(t, c, 4*cs, 5)
	cp(t, a, c, 4*cs)
	ida, vma, _ := backup(t, r, []string{a}, nil)
	idc, _, _ := backup(t, r, []string{c}, nil)
	pack := damageCopy(t, r, vma[0].Chunks[1])
	if err := r.DeleteSnapshot(ctx, ida); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	st, err := r.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksRewritten != 1 || st.Quarantined != 1 || st.PacksDamaged != 1 {
		t.Fatalf("GC %+v: want the pack rewritten, the damaged chunk quarantined and the pack kept in damaged/", st)
	}
	if _, err := r.be.Stat(ctx, blob.Handle{Type: blob.DamagedFile, Name: pack.String()}); err != nil {
		t.Fatalf("the pack holding damage is not in damaged/: %v", err)
	}
	err = restoreEquals(t, r, idc, c)
	var ue *UnrestorableError
	if !errors.As(err, &ue) || len(ue.Offsets) != 1 || ue.Offsets[0] != cs {
		t.Fatalf("restore of the damaged backup: %v, want offset %d named", err, cs)
	}
	// The data backed up again heals it.
	backup(t, r, []string{c}, nil)
	if err := restoreEquals(t, r, idc, c); err != nil {
		t.Fatal(err)
	}
}

// TestGCMovesUnreadablePack: a pack whose index file and trailer both fail
// authentication is moved to damaged/, never deleted.
func TestGCMovesUnreadablePack(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	ctx := context.Background()
	a := filepath.Join(t.TempDir(), "a")
	writeImage(t, a, 4*cs, 6, region{kind: "random", off: 0, n: 4 * cs})
	backup(t, r, []string{a}, nil)
	var packs []string
	if err := r.be.List(ctx, blob.PackFile, func(fi blob.FileInfo) error { packs = append(packs, fi.Name); return nil }); err != nil || len(packs) != 1 {
		t.Fatalf("packs %v %v", packs, err)
	}
	pid, _ := parsePackID(packs[0])
	flipPackByte(t, r.be, pid, -10) // inside the sealed trailer
	ip := filepath.Join(dir, "index", packs[0])
	b, err := os.ReadFile(ip)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(ip, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r = reopen(t, r, dir, testOpts)
	time.Sleep(10 * time.Millisecond)
	st, err := r.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksDamaged != 1 {
		t.Fatalf("GC %+v: want the unreadable pack moved", st)
	}
	if _, err := r.be.Stat(ctx, blob.Handle{Type: blob.DamagedFile, Name: packs[0]}); err != nil {
		t.Fatalf("unreadable pack not in damaged/: %v", err)
	}
	if _, err := r.be.Stat(ctx, packHandle(pid)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unreadable pack still in data/: %v", err)
	}
}
