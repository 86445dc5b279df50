package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/repository/blob"
)

// Backup is one server backup in progress: any number of Volume calls
// (sequential or concurrent), then Commit, which writes the snapshot. From
// NewBackup until Commit or Abort it keeps GC from running, so nothing it
// references can disappear.
type Backup struct {
	r       *Repository
	domain  string // dedup domain of its chunk ids
	err     error  // the lease could not be taken: every call fails with it
	lease   *lease
	release func() // drops the lease
	mu      sync.Mutex
	deps    []ChunkID // chunks this backup references that were not yet durable
	done    bool
	once    sync.Once
}

// VolumeStats is what one Volume call found and cost.
type VolumeStats struct {
	Size         int64 // logical size of the volume
	UsedBytes    int64 // bytes of non-zero chunks
	ChangedBytes int64 // bytes of non-zero chunks that differ from the parent (== UsedBytes without parent)
	NewBytes     int64 // plaintext bytes of chunks newly stored by this backup
	StoredBytes  int64 // bytes added to packs (after compression and encryption)
	ReadBytes    int64 // bytes read from the volume
	ReusedBytes  int64 // bytes of chunks taken from the parent unread (known unchanged)
	Chunks       int   // non-zero chunks
	NewChunks    int
	Duration     time.Duration
}

// NewBackup starts a backup: it registers a lease and loads the index files
// it has not seen, so that it deduplicates against what other processes
// stored and not against what GC marked deleted. It never waits for GC. If
// the repository cannot be reached, every call of the Backup fails.
func (r *Repository) NewBackup() *Backup { return r.NewBackupIn("") }

// NewBackupIn is NewBackup in a dedup domain: chunks are deduplicated only
// against chunks stored in the same domain (the service uses one per
// project, so that no project learns whether another stores some data). ""
// is the repository-wide domain.
func (r *Repository) NewBackupIn(domain string) *Backup {
	b := r.newBackup()
	b.domain = domain
	return b
}

func (r *Repository) newBackup() *Backup {
	ctx := context.Background()
	l, err := r.acquireLease(ctx, leaseBackup)
	if err == nil {
		if err = r.refresh(ctx); err != nil {
			l.release()
		}
	}
	if err != nil {
		return &Backup{r: r, err: err, done: true, release: func() {}}
	}
	return &Backup{r: r, lease: l, release: l.release}
}

// since is the storage time (Unix ns) from which the backup's lease keeps
// marked packs: GC removes only packs marked before it (see
// index.protected).
func (b *Backup) since() int64 {
	return b.lease.start.Add(-b.r.opts.GCMargin).UnixNano()
}

// Abort ends the backup without a snapshot; what it stored becomes garbage
// for GC. It is safe to call after Commit and more than once.
func (b *Backup) Abort() {
	b.mu.Lock()
	b.done = true
	b.mu.Unlock()
	b.once.Do(b.release)
}

const progressEvery = 64 << 20

// volume is the shared state of one Volume call.
type volume struct {
	r        *Repository
	path     string
	vm       *VolumeManifest
	parent   *VolumeManifest
	src      io.ReaderAt
	extents  func(fn func(start, end int64) error) error
	reuse    func(i int64) (ChunkID, bool)
	progress func(int64)
	codec    Compression // of the new chunks
	since    int64       // Backup.since

	used, changed, newBytes, stored atomic.Int64
	readBytes, reused               atomic.Int64
	chunks, newChunks               atomic.Int64

	pmu          sync.Mutex
	done, report int64
}

func (v *volume) advance(n int64) {
	if v.progress == nil {
		return
	}
	v.pmu.Lock()
	v.done += n
	if v.done-v.report >= progressEvery {
		v.report = v.done
		v.progress(v.done)
	}
	v.pmu.Unlock()
}

type job struct {
	i   int
	buf []byte
	n   int
}

// Volume reads the file or block device at path (size bytes), stores the
// chunks the repository lacks, and returns the complete manifest and what it
// cost. VolumeID and Name of the manifest are left for the caller to set.
//
// parent, when non-nil, is this volume's manifest in the previous backup of
// the server; it is only used to compute ChangedBytes. progress (may be nil)
// is called with the bytes processed so far, from one goroutine at a time,
// at least every 64 MiB and at the end. Holes (SEEK_DATA/SEEK_HOLE) are
// skipped without reading them.
func (b *Backup) Volume(ctx context.Context, path string, size int64, parent *VolumeManifest, progress func(done int64)) (*VolumeManifest, VolumeStats, error) {
	if err := b.usable(ctx); err != nil {
		return nil, VolumeStats{}, err
	}
	if size < 0 {
		return nil, VolumeStats{}, fmt.Errorf("backup volume %s: negative size %d", path, size)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, VolumeStats{}, fmt.Errorf("backup volume: %w", err)
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL) // larger readahead from disk; advice only
	if have, err := f.Seek(0, io.SeekEnd); err == nil && have < size {
		return nil, VolumeStats{}, fmt.Errorf("backup volume %s: it has %d bytes, fewer than its size %d", path, have, size)
	}
	extents := func(fn func(start, end int64) error) error { return dataExtents(f, size, fn) }
	return b.volume(ctx, path, f, size, extents, nil, parent, progress)
}

// usable fails when the backup cannot take volumes; otherwise it refreshes
// the index: chunks other processes stored since the backup began (a long
// backup of several volumes) are deduplicated against too.
func (b *Backup) usable(ctx context.Context) error {
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	if b.err != nil {
		return fmt.Errorf("backup volume: %w", b.err)
	}
	if done {
		return errors.New("backup volume: the backup is already committed or aborted")
	}
	if err := b.r.refresh(ctx); err != nil {
		return fmt.Errorf("backup volume: %w", err)
	}
	return nil
}

// volume backs up size bytes of src: extents calls its argument for every
// data region in order; reuse (may be nil) gives the id of a chunk known
// unchanged since parent, which is then not read.
func (b *Backup) volume(ctx context.Context, name string, src io.ReaderAt, size int64,
	extents func(fn func(start, end int64) error) error, reuse func(i int64) (ChunkID, bool),
	parent *VolumeManifest, progress func(done int64)) (*VolumeManifest, VolumeStats, error) {
	start := time.Now()
	r := b.r
	cs := int64(r.cfg.ChunkSize)
	vm := &VolumeManifest{Size: size, ChunkSize: int(cs), Chunks: make([]ChunkID, (size+cs-1)/cs), Domain: b.domain}
	if parent != nil && (parent.ChunkSize != int(cs) || parent.Domain != b.domain) {
		// Another chunking, or ids of another dedup domain: nothing
		// comparable, and a parent's id must never enter this manifest.
		parent, reuse = nil, nil
	}
	v := &volume{r: r, path: name, vm: vm, parent: parent, src: src, extents: extents, reuse: reuse, progress: progress,
		codec: r.opts.Compression.forVolume(parent != nil), since: b.since()}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan job, r.opts.Workers)
	var wg sync.WaitGroup
	deps := make([][]ChunkID, r.opts.Workers)
	for w := range r.opts.Workers {
		wg.Go(func() {
			h := newDomainHasher(r.keys, b.domain)
			for j := range jobs {
				if ctx.Err() == nil {
					dep, err := v.chunk(ctx, h, j)
					if err != nil {
						cancel(err)
					} else if dep {
						deps[w] = append(deps[w], vm.Chunks[j.i])
					}
				}
				r.bufs.put(j.buf)
			}
		})
	}
	rerr := v.read(ctx, cancel, jobs)
	close(jobs)
	wg.Wait()
	b.mu.Lock()
	for _, d := range deps {
		b.deps = append(b.deps, d...)
	}
	b.mu.Unlock()
	if err := context.Cause(ctx); err != nil {
		return nil, VolumeStats{}, err
	}
	if rerr != nil {
		return nil, VolumeStats{}, rerr
	}
	if progress != nil {
		progress(size)
	}
	st := VolumeStats{
		Size:         size,
		UsedBytes:    v.used.Load(),
		ChangedBytes: v.changed.Load(),
		NewBytes:     v.newBytes.Load(),
		StoredBytes:  v.stored.Load(),
		ReadBytes:    v.readBytes.Load(),
		ReusedBytes:  v.reused.Load(),
		Chunks:       int(v.chunks.Load()),
		NewChunks:    int(v.newChunks.Load()),
		Duration:     time.Since(start),
	}
	return vm, st, nil
}

// readers is how many reads of one volume may be in flight. A source that
// serves requests in parallel (an SSD's queue, an NBD export over several
// connections) then keeps the workers busy; a source that does not loses
// nothing.
const readers = 4

// readReq is chunk i: n bytes at off.
type readReq struct {
	i, off int64
	n      int
}

// read feeds the chunks that hold data to jobs: it walks the extents in
// order (holes and chunks reused from the parent are settled here) and
// hands the chunks to read to readers goroutines, which may finish them
// out of order. A read error cancels ctx with that error as its cause.
func (v *volume) read(ctx context.Context, cancel context.CancelCauseFunc, jobs chan<- job) error {
	reqs := make(chan readReq)
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for rq := range reqs {
				if ctx.Err() != nil {
					continue
				}
				if err := v.readChunk(ctx, rq, jobs); err != nil {
					cancel(err)
				}
			}
		})
	}
	cs := int64(v.vm.ChunkSize)
	next := int64(0) // first chunk not yet handled
	err := v.extents(func(start, end int64) error {
		first, last := start/cs, (end-1)/cs
		if first > next {
			v.advance((first - next) * cs) // holes
		}
		for i := max(first, next); i <= last; i++ {
			off := i * cs
			n := int(min(cs, v.vm.Size-off))
			if v.reuse != nil {
				// A parent's chunk that is no longer readable
				// (quarantined, say), or only in a pack GC may
				// remove under this backup (its snapshot deleted), is
				// read again, so the backup stores it.
				if id, ok := v.reuse(i); ok && (id.IsZero() || v.r.idx.protected(id, v.since)) {
					v.keep(i, id, n)
					continue
				}
			}
			select {
			case reqs <- readReq{i: i, off: off, n: n}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		next = max(next, last+1)
		return nil
	})
	close(reqs)
	wg.Wait()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("backup volume %s: %w", v.path, err)
	}
	return err
}

// readChunk reads one chunk into a buffer and hands it to the workers.
func (v *volume) readChunk(ctx context.Context, rq readReq, jobs chan<- job) error {
	buf, err := v.r.bufs.get(ctx)
	if err != nil {
		return err
	}
	v.readBytes.Add(int64(rq.n))
	if got, err := v.src.ReadAt(buf[:rq.n], rq.off); err != nil && !(errors.Is(err, io.EOF) && got == rq.n) {
		v.r.bufs.put(buf)
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("backup volume %s: shorter than its size %d", v.path, v.vm.Size)
		}
		return fmt.Errorf("backup volume %s: read at %d: %w", v.path, rq.off, err)
	}
	select {
	case jobs <- job{i: int(rq.i), buf: buf, n: rq.n}:
		return nil
	case <-ctx.Done():
		v.r.bufs.put(buf)
		return ctx.Err()
	}
}

// chunk handles one chunk read into j.buf: hash, dedup, store. It reports
// whether the backup must wait for the chunk to become durable before
// committing.
func (v *volume) chunk(ctx context.Context, h hasher, j job) (dep bool, err error) {
	r := v.r
	data := j.buf[:j.n]
	defer v.advance(int64(j.n))
	if isZero(data, r.zero) {
		return false, nil
	}
	id := h.sum(data)
	v.vm.Chunks[j.i] = id
	v.used.Add(int64(j.n))
	v.chunks.Add(1)
	if v.parent == nil || j.i >= len(v.parent.Chunks) || v.parent.Chunks[j.i] != id {
		v.changed.Add(int64(j.n))
	}
	switch r.idx.claim(id) {
	case durable:
		return false, nil
	case pending:
		return true, nil
	}
	var s *slot
	select {
	case s = <-r.slots:
	case <-ctx.Done():
		r.idx.unclaim(id, ctx.Err())
		return false, ctx.Err()
	}
	if s == nil {
		s = newSlot(r.cfg.ChunkSize)
	}
	payload, flags := s.compress(v.codec, data)
	sealed := nonceLen + len(payload) + tagLen
	dst, done, err := r.packer.reserve(ctx, id, sealed, j.n, flags)
	if err == nil {
		sealTo(r.keys.aead, dst, payload, id[:])
		done()
	}
	r.slots <- s
	if err != nil {
		r.idx.unclaim(id, err)
		return false, fmt.Errorf("backup volume %s: %w", v.path, err)
	}
	v.newBytes.Add(int64(j.n))
	v.newChunks.Add(1)
	v.stored.Add(int64(sealed))
	return true, nil
}

// Commit waits until every chunk the backup references is durable, then
// writes the snapshot s and ends the backup. s.ID names the snapshot: when
// empty, a random id is chosen and set; when given (lowercase hex), a
// snapshot of that id is replaced atomically. Time is set to now if zero. On error the backup stays open: call Abort (a deferred Abort is
// the usual pattern) or retry.
func (b *Backup) Commit(ctx context.Context, s *Snapshot) (string, error) {
	b.mu.Lock()
	if b.err != nil {
		b.mu.Unlock()
		return "", fmt.Errorf("commit: %w", b.err)
	}
	if b.done {
		b.mu.Unlock()
		return "", errors.New("commit: the backup is already committed or aborted")
	}
	deps := b.deps
	b.mu.Unlock()
	r := b.r
	since := b.since()
	if err := r.idx.waitDurable(ctx, deps, since, r.packer.rotate); err != nil {
		return "", fmt.Errorf("commit: %w", err)
	}
	// Manifests may come from elsewhere (a volume unchanged since the last
	// backup): never write a snapshot pointing at chunks not stored, or
	// only in packs GC may remove before it lists the snapshot.
	for i := range s.Volumes {
		vm := &s.Volumes[i]
		if err := vm.check(); err != nil {
			return "", fmt.Errorf("commit: %w", err)
		}
		for ci, id := range vm.Chunks {
			if id.IsZero() || r.idx.protected(id, since) {
				continue
			}
			if r.idx.has(id) {
				return "", fmt.Errorf("commit: volume %q chunk %d (%v) is only in data that a garbage collection is deleting (its snapshots were deleted before this backup began); back the volume up without a parent", vm.VolumeID, ci, id)
			}
			return "", fmt.Errorf("commit: volume %q chunk %d (%v) is not in the repository", vm.VolumeID, ci, id)
		}
	}
	// A caller may name the snapshot (csbs uses the backup's id) so that a
	// backup re-run after a crash replaces its snapshot instead of leaving
	// a second one behind.
	id := s.ID
	if id == "" {
		id = newID()
	} else if !(blob.Handle{Type: blob.SnapshotFile, Name: id}).Valid() {
		return "", fmt.Errorf("commit: snapshot id %q: want 2-128 lowercase hex digits", id)
	}
	if s.Time.IsZero() {
		s.Time = time.Now().UTC()
	}
	sealed, err := encodeSnapshot(r.keys, id, s)
	if err != nil {
		return "", fmt.Errorf("commit: %w", err)
	}
	// The lease must have protected the backup without a gap, and must
	// still protect it while the snapshot is saved: a fresh heartbeat
	// first, and a check after.
	if err := b.lease.valid(); err != nil {
		return "", fmt.Errorf("commit: %w; run the backup again", err)
	}
	if err := b.lease.heartbeat(ctx); err != nil {
		return "", fmt.Errorf("commit: renew lease: %w", err)
	}
	h := blob.Handle{Type: blob.SnapshotFile, Name: id}
	if err := r.be.Save(ctx, h, bytesReader(sealed)); err != nil {
		return "", fmt.Errorf("commit: save snapshot: %w", err)
	}
	if err := b.lease.valid(); err != nil {
		// Saving took longer than the lease lives: a GC may have removed
		// what the snapshot references. Take it back.
		_ = r.be.Remove(context.WithoutCancel(ctx), h)
		return "", fmt.Errorf("commit: %w; run the backup again", err)
	}
	s.ID = id
	b.Abort()
	return id, nil
}
