package repository

import (
	"context"
	"fmt"
	"sync"
)

// location is where a durable chunk lives. It is kept small: the index holds
// one per stored chunk.
type location struct {
	pack   uint32 // number in index.packs
	offset uint32
	length uint32
	rawLen uint32
	flags  uint8
}

// chunkState is what the index knows about a chunk id.
type chunkState int

const (
	absent  chunkState = iota
	durable            // in a pack whose pack file and index file are on storage
	pending            // claimed by a backup; being stored or in a pack not yet durable
)

// index maps chunk ids to packs: the durable chunks loaded from index files
// and written since, and the pending chunks of running backups.
//
// A pending chunk counts as present for deduplication, so two backups never
// store the same chunk twice; a Commit that references a pending chunk waits
// (waitDurable) until its pack and index are on storage.
type index struct {
	mu      sync.Mutex
	cond    sync.Cond // broadcast when pending chunks become durable or are dropped
	packs   []packID  // pack number -> id; a zero id marks a removed pack
	packNum map[packID]uint32
	chunks  map[ChunkID]location
	pending map[ChunkID]*openPack // nil: claimed, not yet in a pack
	lostErr error                 // why the most recently dropped pending chunks were lost
}

func newIndex() *index {
	x := &index{
		packNum: make(map[packID]uint32),
		chunks:  make(map[ChunkID]location),
		pending: make(map[ChunkID]*openPack),
	}
	x.cond.L = &x.mu
	return x
}

// addPack records the entries of a durable pack. A chunk already known keeps
// its first location (the other copy is garbage for GC). It returns the pack
// number.
func (x *index) addPack(id packID, entries []packEntry) uint32 {
	x.mu.Lock()
	defer x.mu.Unlock()
	pn := x.packNumLocked(id)
	for _, e := range entries {
		if _, ok := x.chunks[e.ID]; ok {
			continue
		}
		x.chunks[e.ID] = location{pack: pn, offset: e.Offset, length: e.Length, rawLen: e.RawLen, flags: e.Flags}
	}
	return pn
}

func (x *index) packNumLocked(id packID) uint32 {
	pn, ok := x.packNum[id]
	if !ok {
		pn = uint32(len(x.packs))
		x.packs = append(x.packs, id)
		x.packNum[id] = pn
	}
	return pn
}

// lookup returns the location of a durable chunk.
func (x *index) lookup(id ChunkID) (location, packID, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	loc, ok := x.chunks[id]
	if !ok {
		return loc, packID{}, false
	}
	return loc, x.packs[loc.pack], true
}

func (x *index) has(id ChunkID) bool {
	x.mu.Lock()
	_, ok := x.chunks[id]
	x.mu.Unlock()
	return ok
}

// claim returns the state of id; when absent, it marks id pending (claimed
// by the caller, who must then either add it to a pack or unclaim it).
func (x *index) claim(id ChunkID) chunkState {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.chunks[id]; ok {
		return durable
	}
	if _, ok := x.pending[id]; ok {
		return pending
	}
	x.pending[id] = nil
	return absent
}

// unclaim drops a claim whose chunk will not be stored.
func (x *index) unclaim(id ChunkID, why error) {
	x.mu.Lock()
	if p, ok := x.pending[id]; ok && p == nil {
		delete(x.pending, id)
		x.lostErr = why
	}
	x.mu.Unlock()
	x.cond.Broadcast()
}

// packDone makes the entries of p durable at pack number pn (err == nil), or
// drops them (err != nil): backups that referenced them fail at Commit.
func (x *index) packDone(p *openPack, err error) {
	x.mu.Lock()
	var pn uint32
	if err == nil {
		pn = x.packNumLocked(p.id)
	} else {
		x.lostErr = err
	}
	for _, e := range p.entries {
		if x.pending[e.ID] == p {
			delete(x.pending, e.ID)
		}
		if err == nil {
			// Overwrites the old location when GC repacks a live chunk.
			x.chunks[e.ID] = location{pack: pn, offset: e.Offset, length: e.Length, rawLen: e.RawLen, flags: e.Flags}
		}
	}
	x.mu.Unlock()
	x.cond.Broadcast()
}

// waitDurable returns when every chunk of ids is durable. Chunks in the open
// pack make it rotate (rotate is called without x.mu held). It fails when a
// chunk is neither durable nor pending: the backup storing it failed.
func (x *index) waitDurable(ctx context.Context, ids []ChunkID, rotate func(*openPack)) error {
	stop := context.AfterFunc(ctx, func() {
		x.mu.Lock()
		x.cond.Broadcast()
		x.mu.Unlock()
	})
	defer stop()
	rotated := make(map[*openPack]bool)
	x.mu.Lock()
	defer x.mu.Unlock()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var toRotate []*openPack
		waiting := false
		for _, id := range ids {
			if _, ok := x.chunks[id]; ok {
				continue
			}
			p, ok := x.pending[id]
			if !ok {
				return fmt.Errorf("chunk %v was not stored (%v); run the backup again", id, x.lostErr)
			}
			waiting = true
			if p != nil && !rotated[p] {
				rotated[p] = true
				toRotate = append(toRotate, p)
			}
		}
		if !waiting {
			return nil
		}
		if len(toRotate) > 0 {
			x.mu.Unlock()
			for _, p := range toRotate {
				rotate(p)
			}
			x.mu.Lock()
			continue
		}
		x.cond.Wait()
	}
}

// dropPacks forgets packs (removed by GC) and every chunk located in them.
func (x *index) dropPacks(ids []packID) {
	if len(ids) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	gone := make(map[uint32]bool, len(ids))
	for _, id := range ids {
		if pn, ok := x.packNum[id]; ok {
			gone[pn] = true
			delete(x.packNum, id)
			x.packs[pn] = packID{}
		}
	}
	for id, loc := range x.chunks {
		if gone[loc.pack] {
			delete(x.chunks, id)
		}
	}
}

// knows reports whether pack id is in the index.
func (x *index) knows(id packID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.packNum[id]
	return ok
}

// hasAll reports whether every non-zero chunk of ids is durable and indexed.
func (x *index) hasAll(ids []ChunkID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, id := range ids {
		if id.IsZero() {
			continue
		}
		if _, ok := x.chunks[id]; !ok {
			return false
		}
	}
	return true
}
