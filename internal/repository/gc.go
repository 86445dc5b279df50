package repository

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
)

// GCStats says what GC did.
type GCStats struct {
	PacksDeleted   int   // packs removed because no snapshot references any of their chunks
	PacksRewritten int   // packs whose live chunks were copied to new packs before removal
	BytesFreed     int64 // net bytes removed from storage
}

// repackThreshold: a pack whose unreferenced bytes exceed this share of its
// size is rewritten.
const repackThreshold = 0.25

// staleTemp is how old a temporary file must be before GC removes it.
const staleTemp = time.Hour

// GC removes chunks no snapshot references. It waits until no backup, restore
// or verify runs and keeps them waiting while it works (see the package
// doc). It refuses to run if a snapshot cannot be read, since the chunks of
// that snapshot would be lost.
//
// Packs with no referenced chunk are deleted (index file first, so an index
// never points at a missing pack). Packs with more than 25% unreferenced
// bytes are rewritten: their live chunks are copied, as sealed, to new packs
// whose index files are written before the old pack and index are deleted.
// Packs left without an index by a crash are re-indexed from their trailer
// if a snapshot needs them, else deleted; index files without a pack and
// stale temporary files are deleted.
func (r *Repository) GC(ctx context.Context) (GCStats, error) {
	r.gcLock.Lock()
	defer r.gcLock.Unlock()
	var st GCStats
	if r.flock != nil {
		h, err := r.flock.tryExclusive()
		if err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		defer h.release()
		// Other processes may have written packs since this one loaded its
		// index; decide with what storage holds now.
		if err := r.reloadIndex(ctx); err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		defer func() {
			if st.PacksDeleted+st.PacksRewritten > 0 {
				// Tell the other processes their index may name deleted
				// packs; this one's is up to date.
				gen := newID()
				if err := h.setGeneration(gen); err == nil {
					r.gen = gen
				}
			}
		}()
	}
	before, err := r.Size(ctx)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	if err := r.packer.flush(); err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}

	// Everything any snapshot references.
	ids, err := r.snapshotIDs(ctx)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	used := make(map[ChunkID]struct{})
	for _, id := range ids {
		s, err := r.LoadSnapshot(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("gc: refusing to delete data while snapshot %s cannot be read (delete it or restore the file): %w", id, err)
		}
		for _, vm := range s.Volumes {
			for _, c := range vm.Chunks {
				if !c.IsZero() {
					used[c] = struct{}{}
				}
			}
		}
	}

	packs, err := listSizes(ctx, r.be, blob.PackFile)
	if err != nil {
		return st, fmt.Errorf("gc: list packs: %w", err)
	}
	indexes, err := listSizes(ctx, r.be, blob.IndexFile)
	if err != nil {
		return st, fmt.Errorf("gc: list index: %w", err)
	}

	// Packs the memory index does not know: left by a crash before their
	// index was written, or with an unreadable index.
	for name, size := range packs {
		id, err := parsePackID(name)
		if err != nil {
			continue
		}
		if r.idx.knows(id) {
			continue
		}
		entries, terr := r.readTrailer(ctx, name, size)
		if terr != nil && !isDamage(terr) {
			return st, fmt.Errorf("gc: %w", terr)
		}
		needed := false
		for _, e := range entries {
			if _, ok := used[e.ID]; ok && !r.idx.has(e.ID) {
				needed = true
			}
		}
		if needed {
			// A snapshot references chunks only this pack holds: index it
			// again rather than lose them.
			if err := saveIndex(ctx, r.be, r.keys, id, encodePackIndex(id, entries)); err != nil {
				return st, fmt.Errorf("gc: %w", err)
			}
			r.idx.addPack(id, entries)
			continue
		}
		if err := r.removePack(ctx, id, indexes); err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		delete(packs, name)
		st.PacksDeleted++
	}
	// Index files without a pack.
	for name := range indexes {
		if _, ok := packs[name]; ok {
			continue
		}
		if err := r.be.Remove(ctx, blob.Handle{Type: blob.IndexFile, Name: name}); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return st, fmt.Errorf("gc: %w", err)
		}
	}

	// Live bytes per known pack.
	type packUse struct {
		live   int64
		chunks []ChunkID
	}
	use := make(map[uint32]*packUse)
	r.idx.mu.Lock()
	for pn, id := range r.idx.packs {
		if id != (packID{}) {
			use[uint32(pn)] = &packUse{}
		}
	}
	for c, loc := range r.idx.chunks {
		if _, ok := used[c]; ok {
			u := use[loc.pack]
			u.live += int64(alignUp(int(loc.length))) // blobs are padded
			u.chunks = append(u.chunks, c)
		}
	}
	packIDs := append([]packID(nil), r.idx.packs...)
	r.idx.mu.Unlock()

	var drop, rewrite []packID
	for pn, u := range use {
		id := packIDs[pn]
		size, ok := packs[id.String()]
		switch {
		case !ok:
			drop = append(drop, id) // pack vanished; chunks must not be referenced
		case u.live == 0:
			drop = append(drop, id)
		case float64(size-u.live) > repackThreshold*float64(size):
			rewrite = append(rewrite, id)
			if err := r.repack(ctx, id, u.chunks); err != nil {
				return st, fmt.Errorf("gc: %w", err)
			}
		}
	}
	// The copies are durable (flush) before any old pack goes.
	if len(rewrite) > 0 {
		if err := r.packer.flush(); err != nil {
			return st, fmt.Errorf("gc: repack: %w", err)
		}
	}
	for _, id := range drop {
		if err := r.removePack(ctx, id, indexes); err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		st.PacksDeleted++
	}
	for _, id := range rewrite {
		if err := r.removePack(ctx, id, indexes); err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		st.PacksRewritten++
	}
	r.idx.dropPacks(append(drop, rewrite...))

	if tr, ok := r.be.(interface {
		RemoveStaleTemp(context.Context, time.Duration) (int64, error)
	}); ok {
		if _, err := tr.RemoveStaleTemp(ctx, staleTemp); err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
	}
	after, err := r.Size(ctx)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	st.BytesFreed = max(0, before-after)
	return st, nil
}

// removePack deletes a pack's index file, then the pack: a crash in between
// leaves a pack without index (garbage), never an index without pack.
func (r *Repository) removePack(ctx context.Context, id packID, indexes map[string]int64) error {
	name := id.String()
	if _, ok := indexes[name]; ok {
		if err := r.be.Remove(ctx, blob.Handle{Type: blob.IndexFile, Name: name}); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := r.be.Remove(ctx, blob.Handle{Type: blob.PackFile, Name: name}); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// repack copies the sealed blobs of chunks from pack id to the open pack;
// the index points at the copies once they are durable.
func (r *Repository) repack(ctx context.Context, id packID, chunks []ChunkID) error {
	type item struct {
		id  ChunkID
		loc location
	}
	items := make([]item, 0, len(chunks))
	for _, c := range chunks {
		loc, _, ok := r.idx.lookup(c)
		if ok {
			items = append(items, item{c, loc})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].loc.offset < items[j].loc.offset })
	buf := alignedBuf(alignUp(r.cfg.ChunkSize + sealOverhead))
	for _, it := range items {
		if alignUp(int(it.loc.length)) > len(buf) {
			buf = alignedBuf(alignUp(int(it.loc.length)))
		}
		b := buf[:it.loc.length]
		if err := loadInto(ctx, r.be, packHandle(id), b, int64(it.loc.offset)); err != nil {
			return fmt.Errorf("repack %v: %w", id, err)
		}
		if err := r.packer.add(ctx, it.id, b, int(it.loc.rawLen), it.loc.flags); err != nil {
			return fmt.Errorf("repack %v: %w", id, err)
		}
	}
	return nil
}

// Size returns the bytes of all files of the repository.
func (r *Repository) Size(ctx context.Context) (int64, error) {
	var n int64
	for _, t := range blob.Types {
		err := r.be.List(ctx, t, func(fi blob.FileInfo) error {
			n += fi.Size
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("repository size: %w", err)
		}
	}
	if tb, ok := r.be.(interface {
		TempBytes(context.Context) (int64, error)
	}); ok {
		t, err := tb.TempBytes(ctx)
		if err != nil {
			return 0, fmt.Errorf("repository size: %w", err)
		}
		n += t
	}
	return n, nil
}
