package repository

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
)

// Quarantine keeps damage from spreading. A stored copy of a chunk that
// fails authentication or its id check (found by Verify, a restore, a read
// or GC) is quarantined: a record naming the copy (its pack and offset) is
// saved as quarantine/<id>, sealed, and every process applies the records
// on refresh. A quarantined copy is as good as absent: backups no longer
// deduplicate against it (the next backup holding the data stores it
// again, which heals every snapshot referencing that chunk id, since ids
// name content), restores read another copy if there is one, and GC
// neither counts it as a reference nor copies it. Records are never
// rewritten; a record naming packs that are gone is harmless.

// quarKey names one stored copy of a chunk.
type quarKey struct {
	pack packID
	off  uint32
}

// quarRecord is the plaintext of a quarantine record (JSON).
type quarRecord struct {
	Time   time.Time  `json:"time"`
	Reason string     `json:"reason,omitempty"`
	Copies []quarCopy `json:"copies"`
}

type quarCopy struct {
	Pack   string  `json:"pack"`
	Chunk  ChunkID `json:"chunk"`
	Offset uint32  `json:"offset"`
}

// maxQuarantineFile bounds what is read of a record before it is
// authenticated.
const maxQuarantineFile = 4 << 20

var aadQuarantine = []byte("csbs quarantine v1")

// badCopy is a damaged copy of a chunk: where it lies.
type badCopy struct {
	pack   packID
	offset uint32
	id     ChunkID
}

// badLocked reports whether the copy at offset off of pack pn is
// quarantined.
func (x *index) badLocked(pn uint32, off uint32) bool {
	if len(x.quar) == 0 {
		return false
	}
	_, ok := x.quar[quarKey{x.packs[pn].id, off}]
	return ok
}

// applyQuarantine adds copies to the quarantine; it returns how many were
// new.
func (x *index) applyQuarantine(copies []badCopy) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, c := range copies {
		k := quarKey{c.pack, c.offset}
		if _, ok := x.quar[k]; ok {
			continue
		}
		x.quar[k] = c.id
		x.quarChunk[c.id]++
		n++
	}
	return n
}

// quarantined reports whether a copy of chunk id is quarantined.
func (x *index) quarantined(id ChunkID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.quarChunk[id] > 0
}

// quarantinedIn returns the quarantined copies in pack id (offsets).
func (x *index) quarantinedIn(id packID) []uint32 {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []uint32
	for k := range x.quar {
		if k.pack == id {
			out = append(out, k.off)
		}
	}
	return out
}

// isBad reports whether the copy at off in pack id is quarantined.
func (x *index) isBad(id packID, off uint32) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.quar[quarKey{id, off}]
	return ok
}

// Quarantined returns the number of chunk copies in quarantine (as this
// process has loaded them).
func (r *Repository) Quarantined() int {
	r.idx.mu.Lock()
	defer r.idx.mu.Unlock()
	return len(r.idx.quar)
}

// quarantine records copies as damaged, durably, and drops them from this
// process's index (other processes drop them at their next refresh).
// Copies already quarantined are skipped. reason says what was found.
func (r *Repository) quarantine(ctx context.Context, copies []badCopy, reason string) error {
	var fresh []badCopy
	for _, c := range copies {
		if !r.idx.isBad(c.pack, c.offset) {
			fresh = append(fresh, c)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	rec := quarRecord{Time: time.Now().UTC(), Reason: reason}
	for _, c := range fresh {
		rec.Copies = append(rec.Copies, quarCopy{Pack: c.pack.String(), Chunk: c.id, Offset: c.offset})
	}
	js, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if len(js) > maxQuarantineFile-sealOverhead {
		// A pack holds at most maxPackSize/align blobs; a record lists a
		// verify run's or restore's finds. Split what does not fit.
		half := len(fresh) / 2
		if err := r.quarantine(ctx, fresh[:half], reason); err != nil {
			return err
		}
		return r.quarantine(ctx, fresh[half:], reason)
	}
	name := newID()
	h := blob.Handle{Type: blob.QuarantineFile, Name: name}
	// Applied before it is saved: this process stops using the copies even
	// if the record cannot be written (they are damaged either way).
	r.idx.applyQuarantine(fresh)
	if err := r.be.Save(ctx, h, bytesReader(seal(r.keys.aead, js, aadQuarantine))); err != nil {
		return fmt.Errorf("save quarantine record: %w", err)
	}
	r.idx.mu.Lock()
	r.idx.quarSeen[name] = true
	r.idx.mu.Unlock()
	return nil
}

// refreshQuarantine applies the quarantine records not seen yet. A record
// that fails authentication is skipped (and remembered): it can only make
// copies unusable, so ignoring a damaged one never hides damage from a
// reader, which authenticates every chunk anyway.
func (r *Repository) refreshQuarantine(ctx context.Context) error {
	var todo []string
	err := r.be.List(ctx, blob.QuarantineFile, func(fi blob.FileInfo) error {
		r.idx.mu.Lock()
		seen := r.idx.quarSeen[fi.Name]
		r.idx.mu.Unlock()
		if !seen {
			todo = append(todo, fi.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list quarantine: %w", err)
	}
	for _, name := range todo {
		copies, err := r.readQuarantine(ctx, name)
		if isNotExist(err) {
			continue
		}
		if err != nil && !isDamage(err) {
			return err
		}
		r.idx.applyQuarantine(copies)
		r.idx.mu.Lock()
		r.idx.quarSeen[name] = true
		r.idx.mu.Unlock()
	}
	return nil
}

// readQuarantine reads one record; damage comes back as a damageError.
func (r *Repository) readQuarantine(ctx context.Context, name string) ([]badCopy, error) {
	b, err := readAll(ctx, r.be, blob.Handle{Type: blob.QuarantineFile, Name: name}, maxQuarantineFile)
	if err != nil {
		return nil, fmt.Errorf("quarantine record %s: %w", name, err)
	}
	plain, err := open(r.keys.aead, nil, b, aadQuarantine)
	if err != nil {
		return nil, damageError{fmt.Errorf("quarantine record %s: %w", name, err)}
	}
	return decodeQuarantine(plain)
}

// decodeQuarantine parses a record's plaintext.
func decodeQuarantine(plain []byte) ([]badCopy, error) {
	var rec quarRecord
	if err := json.Unmarshal(plain, &rec); err != nil {
		return nil, damageError{fmt.Errorf("quarantine record: %w", err)}
	}
	out := make([]badCopy, 0, len(rec.Copies))
	for _, c := range rec.Copies {
		p, err := parsePackID(c.Pack)
		if err != nil {
			return nil, damageError{fmt.Errorf("quarantine record: %w", err)}
		}
		out = append(out, badCopy{pack: p, offset: c.Offset, id: c.Chunk})
	}
	return out, nil
}

// moveToDamaged moves pack id out of data/ into damaged/ (copied, then
// removed): GC calls it instead of removing a pack it cannot read or that
// holds quarantined copies, so that damage leaves a trace an operator (or
// a later repair) can inspect. A pack already gone is not an error.
func (r *Repository) moveToDamaged(ctx context.Context, id packID) error {
	src := packHandle(id)
	dst := blob.Handle{Type: blob.DamagedFile, Name: id.String()}
	err := r.be.Load(ctx, src, 0, 0, func(rd io.Reader) error {
		return r.be.Save(ctx, dst, rd)
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("move pack %v to damaged/: %w", id, err)
	}
	if err := r.be.Remove(ctx, src); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("move pack %v to damaged/: %w", id, err)
	}
	return nil
}
