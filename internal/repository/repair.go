package repository

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"

	"github.com/csbs/csbs/internal/repository/blob"
)

// RepairReport is what Repair did and what stays broken.
type RepairReport struct {
	// ReindexedPacks are the packs no readable index file listed whose
	// trailer was read and indexed again.
	ReindexedPacks []string
	// UnreadablePacks are packs without a readable index file whose
	// trailer cannot be read either (GC moves them to damaged/).
	UnreadablePacks []string
	// YoungPacks is how many packs without an index file were left alone
	// for being younger than the oldest running operation (minus the GC
	// margin): a running backup may be indexing them.
	YoungPacks int
	// IndexFilesRewritten is how many index files were replaced by
	// consolidated ones (those that were damaged, listed quarantined
	// copies, or were small).
	IndexFilesRewritten int
	// Quarantined is how many quarantined chunk copies lie in packs the
	// index lists: the index files written leave them out.
	Quarantined int
	// Incomplete names the snapshots that still cannot be restored whole,
	// and what of them: they stay incomplete until a backup stores the
	// data again (or for good, when no server holds it any more).
	Incomplete []SnapshotDamage
	// Snapshots is how many snapshots were checked.
	Snapshots int
}

// Repair rebuilds what the index lost and reports what cannot be
// rebuilt. It indexes again, from their trailers, the packs that no
// readable index file lists (index files lost or damaged); it rewrites the
// index files that are damaged or still name quarantined copies as
// consolidated files without them (the quarantine records stay, so
// processes that loaded the old files keep ignoring those copies); and it
// names the snapshots that still reference data no readable copy holds.
// It reads no chunk (Verify does): damage inside a pack that no one found
// yet is not reported.
//
// Repair holds the GC lease: it returns ErrBusy while a GC runs, and no GC
// runs meanwhile. Packs younger than the oldest running operation (minus
// Options.GCMargin) may be a running backup's, whose index file is on its
// way: they are left alone. Backups, restores and verifies go on.
func (r *Repository) Repair(ctx context.Context) (*RepairReport, error) {
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	gl, err := r.acquireLease(ctx, leaseGC)
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	defer gl.release()
	live, _, err := r.readLeases(ctx, gl.start)
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	barrier, err := r.barrier(gl, live)
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	if err := r.packer.flush(); err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	if err := r.refresh(ctx); err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	rep := &RepairReport{}
	var reindexed []parsedPack
	err = r.be.List(ctx, blob.PackFile, func(fi blob.FileInfo) error {
		id, err := parsePackID(fi.Name)
		if err != nil || r.idx.knows(id) {
			return nil
		}
		if !fi.ModTime.Before(barrier) {
			rep.YoungPacks++
			return nil
		}
		entries, terr := r.readTrailer(ctx, fi.Name, fi.Size)
		switch {
		case errors.Is(terr, fs.ErrNotExist):
		case isDamage(terr):
			rep.UnreadablePacks = append(rep.UnreadablePacks, fi.Name)
		case terr != nil:
			return terr
		default:
			reindexed = append(reindexed, parsedPack{id: id, entries: entries})
			rep.ReindexedPacks = append(rep.ReindexedPacks, fi.Name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	sort.Strings(rep.ReindexedPacks)
	sort.Strings(rep.UnreadablePacks)
	rep.Quarantined = r.idx.quarantinedListed()
	if err := gl.valid(); err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	superseded, _, err := r.writeIndex(ctx, map[uint32]packFate{}, reindexed, true)
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	rep.IndexFilesRewritten = len(superseded)
	for _, name := range superseded {
		if err := r.be.Remove(ctx, blob.Handle{Type: blob.IndexFile, Name: name}); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("repair: %w", err)
		}
	}
	// What stays incomplete, with the index as it is now.
	ids, err := r.snapshotIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	sort.Strings(ids)
	missing := make(map[ChunkID]bool)
	scratch := &VerifyReport{}
	for _, id := range ids {
		s, err := r.LoadSnapshot(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case isDamage(err):
			rep.Snapshots++
			rep.Incomplete = append(rep.Incomplete, SnapshotDamage{Snapshot: id, Unreadable: true})
			continue
		case err != nil:
			return nil, fmt.Errorf("repair: %w", err)
		}
		rep.Snapshots++
		if sd := r.snapshotDamage(s, missing, scratch, func(string, string, ...any) {}); sd != nil {
			rep.Incomplete = append(rep.Incomplete, *sd)
		}
	}
	return rep, nil
}

// quarantinedListed counts the quarantined copies in packs the index still
// lists (those a rewrite of their index files drops).
func (x *index) quarantinedListed() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for k := range x.quar {
		if pn, ok := x.packNum[k.pack]; ok && !x.packs[pn].gone {
			n++
		}
	}
	return n
}
