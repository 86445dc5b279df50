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

// openPack is a pack being filled.
type openPack struct {
	id      packID
	f       *os.File
	size    int64 // bytes reserved so far (blobs padded to align)
	entries []packEntry
	direct  bool           // f has O_DIRECT set; only the writer goroutine changes it
	seg     *segment       // staging buffer being filled, nil if none
	writes  sync.WaitGroup // segments handed to the writer and not yet written
	closed  bool           // no more blobs; finalization started

	mu  sync.Mutex // guards err, set by the writer goroutine
	err error
}

// segment is a staging buffer holding the pack bytes [off, off+n).
type segment struct {
	buf   []byte // aligned
	off   int64
	n     int
	fills sync.WaitGroup // blobs reserved in buf and not yet written into it
}

type segWrite struct {
	p   *openPack
	seg *segment
}

// packer appends blobs to the shared open pack and finalizes full packs in
// the background: pack file synced and renamed, then its index file saved,
// then its chunks marked durable in the index. That order is the crash-safety
// contract: an index never points into a pack that is not on storage, and a
// chunk is durable (may be referenced by a snapshot) only after both.
//
// Workers reserve room for a blob in a staging segment (under the lock) and
// seal the chunk straight into it (outside the lock: no copy of the sealed
// data, and no worker waits while another encrypts); one writer goroutine
// writes full segments once their blobs are in, with direct
// I/O where possible, so workers never wait for the disk unless every
// segment is in flight (backpressure). One writer also means no two writes
// contend for the file's inode lock in the kernel.
type packer struct {
	be     blob.Backend
	keys   *keys
	idx    *index
	target int64

	mu     sync.Mutex
	cur    *openPack
	segs   *freeList
	writeq chan segWrite
	wg     sync.WaitGroup // finalizations in flight
	errs   []error        // finalization failures not yet reported by flush

	// lease registers a pack being saved and indexed, so that no GC takes
	// the pack for garbage while its index file is on its way (the
	// backups that filled it may have ended).
	lease func(context.Context) (release func(), err error)
}

// newPacker starts the writer goroutine; close stops it.
func newPacker(be blob.Backend, k *keys, idx *index, target int64, chunkSize int) *packer {
	const nsegs = 3
	segLen := max(8<<20, 2*alignUp(nonceLen+chunkSize+tagLen))
	pk := &packer{
		be: be, keys: k, idx: idx, target: target,
		segs:   newFreeList(nsegs, func() []byte { return alignedBuf(segLen) }),
		writeq: make(chan segWrite, nsegs),
	}
	go pk.writeLoop()
	return pk
}

func (pk *packer) close() { close(pk.writeq) }

func (pk *packer) writeLoop() {
	for w := range pk.writeq {
		p, seg := w.p, w.seg
		seg.fills.Wait()
		data := seg.buf[:seg.n]
		_, err := p.f.WriteAt(data, seg.off)
		if err != nil && p.direct {
			// Direct I/O refused after all (alignment rules of an odd
			// file system): continue buffered.
			if setDirect(p.f, false) == nil {
				p.direct = false
				_, err = p.f.WriteAt(data, seg.off)
			}
		}
		if err != nil {
			p.mu.Lock()
			if p.err == nil {
				p.err = fmt.Errorf("write pack: %w", err)
			}
			p.mu.Unlock()
		}
		pk.segs.put(seg.buf)
		p.writes.Done()
	}
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
		p.f, err = blob.AnonymousTemp("csbs-pack-")
	}
	if err != nil {
		return nil, fmt.Errorf("create pack: %w", err)
	}
	p.direct = setDirect(p.f, true) == nil
	return p, nil
}

// add appends blob (a sealed chunk) to the open pack, like reserve; blob
// is copied, the caller may reuse it when add returns.
func (pk *packer) add(ctx context.Context, id ChunkID, blob []byte, rawLen int, flags uint8) error {
	dst, done, err := pk.reserve(ctx, id, len(blob), rawLen, flags)
	if err != nil {
		return err
	}
	copy(dst, blob)
	done()
	return nil
}

// reserve makes room for a sealed chunk of length bytes in the open pack
// and records the chunk as pending there. The chunk must be claimed by the
// caller (or, for GC's repacking, already durable elsewhere). The caller
// writes the blob into dst, then calls done: always, and at once, for the
// segment is written only after (nothing that waits may come in between).
// Blobs are padded with random bytes to a multiple of align. A failure to
// write the pack shows later: its chunks are dropped from the index and
// the Commits that need them fail.
func (pk *packer) reserve(ctx context.Context, id ChunkID, length, rawLen int, flags uint8) (dst []byte, done func(), err error) {
	padded := alignUp(length)
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.cur == nil {
		p, err := pk.newPack(ctx)
		if err != nil {
			return nil, nil, err
		}
		pk.cur = p
	}
	p := pk.cur
	if p.seg != nil && p.seg.n+padded > len(p.seg.buf) {
		pk.submitLocked(p)
	}
	if p.seg == nil {
		buf, err := pk.segs.get(ctx) // waits while the writer is behind
		if err != nil {
			return nil, nil, err
		}
		p.seg = &segment{buf: buf, off: p.size}
	}
	if padded > len(p.seg.buf) {
		return nil, nil, fmt.Errorf("blob of %d bytes is larger than a pack segment", length)
	}
	seg := p.seg
	dst = seg.buf[seg.n : seg.n+length]
	// Random padding: zeros would show where each sealed blob ends, and so
	// its compressed length, to whoever holds the storage; stale buffer
	// content would leak plaintext of nothing, but is not written either.
	rand.Read(seg.buf[seg.n+length : seg.n+padded])
	seg.fills.Add(1)
	off := p.size
	seg.n += padded
	p.size += int64(padded)
	p.entries = append(p.entries, packEntry{ID: id, Offset: uint32(off), Length: uint32(length), RawLen: uint32(rawLen), Flags: flags})
	pk.idx.mu.Lock()
	pk.idx.pending[id] = p
	pk.idx.mu.Unlock()
	if p.size >= pk.target {
		pk.cur = nil
		pk.closeLocked(p)
	}
	return dst, seg.fills.Done, nil
}

// submitLocked hands p's segment to the writer.
func (pk *packer) submitLocked(p *openPack) {
	p.writes.Add(1)
	pk.writeq <- segWrite{p, p.seg} // never blocks: there are as many slots as segments
	p.seg = nil
}

// closeLocked ends p: its last segment goes to the writer, and it is
// finalized once every segment is written.
func (pk *packer) closeLocked(p *openPack) {
	if p.closed {
		return
	}
	p.closed = true
	if p.seg != nil {
		pk.submitLocked(p)
	}
	pk.wg.Add(1)
	go func() {
		defer pk.wg.Done()
		p.writes.Wait()
		if err := pk.finalize(p); err != nil {
			pk.mu.Lock()
			pk.errs = append(pk.errs, err)
			pk.mu.Unlock()
		}
	}()
}

// rotate closes p for new blobs so it is finalized as soon as its writes
// are done. It does nothing if p is already closed.
func (pk *packer) rotate(p *openPack) {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.cur == p {
		pk.cur = nil
	}
	pk.closeLocked(p)
}

// flush finalizes the open pack and waits for every finalization, returning
// the failures since the last flush.
func (pk *packer) flush() error {
	pk.mu.Lock()
	if p := pk.cur; p != nil {
		pk.cur = nil
		pk.closeLocked(p)
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
	p.mu.Lock()
	werr := p.err
	p.mu.Unlock()
	if werr != nil {
		return werr
	}
	if pk.lease != nil {
		release, err := pk.lease(ctx)
		if err != nil {
			return err
		}
		defer release()
	}
	if p.direct {
		// The trailer is not block-aligned.
		if err := setDirect(p.f, false); err != nil {
			return fmt.Errorf("write trailer: %w", err)
		}
	}
	plain := encodePackIndex(p.id, p.entries)
	trailer := seal(pk.keys.aead, plain, aadTrailer)
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
	_ = f.Close() // anonymous: closing frees it
}

func saveIndex(ctx context.Context, be blob.Backend, k *keys, id packID, plain []byte) error {
	sealed := seal(k.aead, plain, aadIndex)
	if err := be.Save(ctx, blob.Handle{Type: blob.IndexFile, Name: id.String()}, bytes.NewReader(sealed)); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	return nil
}
