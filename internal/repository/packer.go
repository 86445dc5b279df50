package repository

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/csbs/csbs/internal/repository/blob"
)

// openPack is a pack being filled. Blobs are written with WriteAt at offsets
// reserved under packer.mu, so several workers write at once.
type openPack struct {
	id      packID
	f       *os.File
	size    int64
	entries []packEntry
	writers int  // WriteAt calls in flight
	full    bool // no more reservations; finalized when writers drops to 0
	err     error
}

// packer appends blobs to the shared open pack and finalizes full packs in
// the background: pack file synced and renamed, then its index file saved,
// then its chunks marked durable in the index. That order is the crash-safety
// contract: an index never points into a pack that is not on storage, and a
// chunk is durable (may be referenced by a snapshot) only after both.
type packer struct {
	be     blob.Backend
	keys   *keys
	idx    *index
	target int64

	mu   sync.Mutex
	cur  *openPack
	wg   sync.WaitGroup // finalizations in flight
	errs []error        // finalization failures not yet reported by flush
}

func (pk *packer) newPack(ctx context.Context) (*openPack, error) {
	p := new(openPack)
	if _, err := rand.Read(p.id[:]); err != nil {
		return nil, err
	}
	var err error
	if fs, ok := pk.be.(blob.FileSaver); ok {
		p.f, err = fs.TempFile(ctx)
	} else {
		p.f, err = os.CreateTemp("", "csbs-pack-")
	}
	if err != nil {
		return nil, fmt.Errorf("create pack: %w", err)
	}
	return p, nil
}

// add writes blob (a sealed chunk) to the open pack and records it as
// pending there. The chunk must be claimed by the caller (or, for GC's
// repacking, already durable elsewhere).
func (pk *packer) add(ctx context.Context, id ChunkID, blob []byte, rawLen int, flags uint8) error {
	pk.mu.Lock()
	if pk.cur == nil {
		p, err := pk.newPack(ctx)
		if err != nil {
			pk.mu.Unlock()
			return err
		}
		pk.cur = p
	}
	p := pk.cur
	off := p.size
	p.size += int64(len(blob))
	p.entries = append(p.entries, packEntry{ID: id, Offset: uint32(off), Length: uint32(len(blob)), RawLen: uint32(rawLen), Flags: flags})
	p.writers++
	if p.size >= pk.target {
		p.full = true
		pk.cur = nil
	}
	pk.idx.mu.Lock()
	pk.idx.pending[id] = p
	pk.idx.mu.Unlock()
	pk.mu.Unlock()

	_, err := p.f.WriteAt(blob, off)

	pk.mu.Lock()
	p.writers--
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("write pack: %w", err)
	}
	pk.finalizeIfReadyLocked(p)
	pk.mu.Unlock()
	if err != nil {
		return fmt.Errorf("write pack: %w", err)
	}
	return nil
}

func (pk *packer) finalizeIfReadyLocked(p *openPack) {
	if p.full && p.writers == 0 {
		p.writers = -1 // finalized once
		pk.wg.Add(1)
		go func() {
			defer pk.wg.Done()
			if err := pk.finalize(p); err != nil {
				pk.mu.Lock()
				pk.errs = append(pk.errs, err)
				pk.mu.Unlock()
			}
		}()
	}
}

// rotate closes p for new blobs so it is finalized as soon as its writes
// are done. It does nothing if p is already closed.
func (pk *packer) rotate(p *openPack) {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.cur == p {
		pk.cur = nil
	}
	p.full = true
	pk.finalizeIfReadyLocked(p)
}

// flush finalizes the open pack and waits for every finalization, returning
// the failures since the last flush.
func (pk *packer) flush() error {
	pk.mu.Lock()
	if p := pk.cur; p != nil {
		pk.cur = nil
		p.full = true
		pk.finalizeIfReadyLocked(p)
	}
	pk.mu.Unlock()
	pk.wg.Wait()
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if len(pk.errs) > 0 {
		err := pk.errs[0]
		pk.errs = nil
		return err
	}
	return nil
}

// finalize appends the trailer, saves the pack, saves its index file and
// marks its chunks durable, in that order.
func (pk *packer) finalize(p *openPack) (err error) {
	ctx := context.Background() // finishing a pack is not cancelled: its chunks may be shared
	saved := false
	defer func() {
		if err != nil {
			err = fmt.Errorf("pack %v: %w", p.id, err)
			if !saved {
				pk.removeTemp(p.f)
			}
		}
		pk.idx.packDone(p, err)
	}()
	if p.err != nil {
		return p.err
	}
	plain := encodePackIndex(p.id, p.entries)
	trailer := seal(pk.keys.aead, nil, plain, aadTrailer)
	trailer = binary.LittleEndian.AppendUint32(trailer, uint32(len(trailer)))
	if _, err := p.f.WriteAt(trailer, p.size); err != nil {
		return fmt.Errorf("write trailer: %w", err)
	}
	h := blob.Handle{Type: blob.PackFile, Name: p.id.String()}
	if fs, ok := pk.be.(blob.FileSaver); ok {
		saved = true // SaveFile removes f on failure
		if err := fs.SaveFile(ctx, h, p.f); err != nil {
			return err
		}
	} else {
		if _, err := p.f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := pk.be.Save(ctx, h, p.f); err != nil {
			return err
		}
		pk.removeTemp(p.f)
		saved = true
	}
	// A crash here leaves a pack without index: unreferenced garbage that GC
	// removes (or re-indexes, should a snapshot need it).
	return saveIndex(ctx, pk.be, pk.keys, p.id, plain)
}

func (pk *packer) removeTemp(f *os.File) {
	if fs, ok := pk.be.(blob.FileSaver); ok {
		_ = fs.RemoveTemp(f)
		return
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
}

func saveIndex(ctx context.Context, be blob.Backend, k *keys, id packID, plain []byte) error {
	sealed := seal(k.aead, nil, plain, aadIndex)
	if err := be.Save(ctx, blob.Handle{Type: blob.IndexFile, Name: id.String()}, bytes.NewReader(sealed)); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	return nil
}
