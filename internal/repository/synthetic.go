package repository

import (
	"context"
	"crypto/rand"
	"fmt"
)

// WriteSyntheticIndex writes consolidated index files describing packs
// packs of chunksPerPack incompressible chunks of ChunkSize bytes each, with
// random ids, and no pack files. It exists for the benchmarks of opening a
// large index (bench/indexbench): never use it on a repository that holds
// backups (GC would forget the packs it describes, which do not exist).
func WriteSyntheticIndex(ctx context.Context, r *Repository, packs, chunksPerPack int) error {
	cs := uint32(r.cfg.ChunkSize)
	blobLen := cs + sealOverhead
	if uint64(chunksPerPack)*uint64(alignUp(int(blobLen))) > maxPackSize {
		return fmt.Errorf("synthetic index: %d chunks do not fit a pack", chunksPerPack)
	}
	gen := r.idx.maxGen + 1
	for done := 0; done < packs; {
		n := min(indexFilePacks, packs-done)
		batch := make([]parsedPack, n)
		for i := range batch {
			p := &batch[i]
			_, _ = rand.Read(p.id[:])
			p.entries = make([]packEntry, chunksPerPack)
			off := uint32(0)
			for j := range p.entries {
				e := &p.entries[j]
				_, _ = rand.Read(e.ID[:])
				e.Offset, e.Length, e.RawLen, e.Flags = off, blobLen, cs, flagRaw
				off += uint32(alignUp(int(blobLen)))
			}
		}
		if _, err := r.saveIndex2(ctx, gen, nil, batch); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// IndexStats says how big the memory index is.
type IndexStats struct {
	Packs   int // packs known and not removed
	Entries int // chunk locations (a chunk stored twice counts twice)
	Files   int // index files applied
}

// IndexStats returns the size of the memory index.
func (r *Repository) IndexStats() IndexStats {
	p, e := r.idx.stats()
	r.idx.mu.Lock()
	f := len(r.idx.fileNum)
	r.idx.mu.Unlock()
	return IndexStats{Packs: p, Entries: e, Files: f}
}
