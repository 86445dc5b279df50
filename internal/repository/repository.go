// Package repository stores disk images (volumes) of servers: deduplicated,
// compressed and encrypted, in a directory or an object store (any
// blob.Backend), shared by any number of processes on any number of hosts.
//
// A volume is cut into fixed-size chunks (1 MiB by default, aligned to
// offsets; the size is fixed when the repository is made). Holes and all-zero chunks are not stored. Every other chunk is
// named by the keyed BLAKE3 hash of its plaintext (the key derives from the
// master key, so ids reveal nothing about content), compressed (S2 or
// zstd: Options.Compression) when that helps, sealed with AES-256-GCM and appended to a pack file of ~32 MiB. A
// pack ends with a sealed trailer listing its chunks; a small sealed index
// file per pack (index/<pack id>) says the same, and GC merges those into
// consolidated index files (index/<random id>, up to 4096 packs each; format
// in format.go). A snapshot (one server backup) is a sealed, compressed JSON
// manifest listing every chunk of every volume, so each snapshot restores
// alone. The master key is sealed in keys/<id> with a key derived from the
// password by Argon2id. With the storage and the password alone, everything
// can be listed and restored.
//
// # Objects
//
//	config          plaintext JSON: version, repository id, chunk size and
//	                (version 3) their MAC keyed from the master key
//	keys/<id>       JSON: the master key sealed with an Argon2id key
//	data/<xx>/<id>  a pack: sealed chunks, each 4 KiB aligned, then the sealed
//	                trailer (a pack index) and its length (uint32 LE)
//	index/<id>      sealed; a pack index ("CSBSIDX1", named after its pack)
//	                or a consolidated index ("CSBSIX2\n": generation, the
//	                index files it supersedes, packs with tombstones and
//	                entries); both in format.go
//	snapshots/<id>  sealed zstd-compressed JSON manifest
//	leases/<id>     plaintext JSON {kind, host, pid, start, ttl_ns}, at most
//	                4 KiB, re-saved as heartbeat
//	quarantine/<id> sealed JSON: chunk copies (pack, offset, chunk id) found
//	                damaged; no process uses them (quarantine.go)
//	damaged/<id>    a pack GC could not read, or that held quarantined
//	                copies when GC removed it: moved here, never deleted
//
// # Damage
//
// Every chunk is authenticated (GCM, then its id re-hashed) before a byte
// of it is used. A copy that fails is quarantined by whoever finds it
// (Verify, a restore, a reader, GC): recorded durably and dropped from
// every process's index at its next refresh, so backups store the data
// again instead of deduplicating against the damaged copy, and the
// snapshots referencing it heal (ids name content). GC authenticates what
// it copies and the copy it keeps when it drops another, and moves what it
// cannot read to damaged/.
//
// # Crash safety
//
// A pack is written and synced, then its index file, and only then are its
// chunks durable; a snapshot is written only after every chunk it references
// is durable. A crash at any point leaves unreferenced garbage (temporary
// files, packs without an index, packs no snapshot references), never a
// snapshot pointing at missing data. GC removes the garbage.
//
// # The invariant
//
// Every committed snapshot restores, under any interleaving of backups,
// restores, deletes and GCs in any processes on any hosts, and a SIGKILL of
// any process at any point. Nothing is exclusive: GC never blocks a backup,
// restore or verify, and they never block GC. This rests on leases and on
// deleting in two phases, with every time taken from the storage (object
// ModTimes), so the hosts' clocks need not agree:
//
//   - Leases. Every Backup (NewBackup to Commit/Abort), RestoreVolume, Verify
//     and pack being saved and indexed registers a lease, leases/<id>, and
//     re-saves it every LeaseTTL/4. Its start is the ModTime of its first
//     save. A lease not re-saved for LeaseTTL (by storage time) is stale: its
//     process died or lost the storage (each lease records its holder's
//     LeaseTTL). A Backup whose lease may have looked stale (saves more than
//     LeaseTTL apart, less a slack for the storage's time granularity) does
//     not commit; Commit renews the lease before saving the snapshot and
//     takes the snapshot back if the save outlasted the lease.
//   - Refresh. Each of those operations, after registering, loads the index
//     files it has not seen (refresh.go). So it deduplicates against what
//     every process stored, and sees every tombstone written before it began.
//   - Phase 1, mark. GC writes tombstones for the packs no committed snapshot
//     references (in a consolidated index file; its ModTime is the
//     tombstone's time). It marks only packs made before the barrier
//     (below): younger ones may belong to running backups. A chunk only in
//     tombstoned packs is absent to
//     deduplication: a backup stores it again rather than reference it.
//   - Phase 2, remove. A pack is removed only when no committed snapshot
//     references it and its tombstone is older than the barrier: the start of
//     the oldest live lease (or now), minus GCMargin. Any operation that may
//     use the pack began before the tombstone, so its lease holds the barrier
//     back until it ends; any operation that began after saw the tombstone.
//     A snapshot committed by a backup that deduplicated against a pack
//     before its tombstone revives the pack.
//   - References. A backup references a chunk without storing it only if
//     the chunk is in a live pack or in one marked after the backup began
//     (its lease keeps those): deduplication, chunks taken from the parent
//     unread and Commit's check of the manifests all apply this rule, and
//     Commit waits for the backup's own copies rather than count on a copy
//     in a pack marked earlier (TestRaceCommitOfChunkInMarkedPack,
//     TestRaceParentChunksInMarkedPack).
//   - Reads of marked packs. A read (restore, verify, a reader) may use a
//     pack marked before it began: for a chunk it knows no live copy of,
//     referenced by a snapshot committed after the mark and not yet
//     revived. GC removes such a pack only when a live copy is indexed;
//     a read that finds its pack gone refreshes the index and finds that
//     copy (TestRaceRestoreOfRevivableChunk). Packs without an index file
//     (being indexed, or left by a crash) are removed only when their own
//     ModTime is older than the barrier, and re-indexed if a snapshot needs
//     them. GCMargin also covers the storage's time granularity (a second on
//     S3) and must exceed it. A tombstone must not be dated before it
//     became visible, yet storage may date an object by the start of its
//     save: GC saves a file with new tombstones twice and the date of the
//     second save counts (TestTombstoneDatedAfterVisible).
//   - GC writes the new index files before it removes packs and removes
//     superseded index files last, so a GC killed or failing at any point
//     leaves storage restorable and its own process's index consistent
//     (what it applied in memory is on storage). A consolidated file names
//     the files it supersedes; their packs it does not list are gone. A file
//     disappears only after the files superseding it were written, so a
//     process that finds a file it applied gone from storage drops the packs
//     no newer file lists. A file never outlives every file naming it as
//     superseded: the next consolidated file also names the superseded files
//     still on storage (a GC stopped before removing them), and they go
//     with it. A pack missing from storage is not a copy of anything.
//   - One GC at a time: a GC that finds the live lease of another GC that
//     did not begin strictly later returns ErrBusy (two begun in the same
//     clock tick may both; never do both run). Stale leases are ignored
//     and, after 4×LeaseTTL, removed.
//
// A snapshot deleted while it is being restored is no longer committed: the
// restore may then fail (its packs may go once marked before it began).
//
// A long backup holds the barrier at its start, so the packs marked after it
// began wait for it; everything marked before is removed meanwhile, and a
// stream of backups never stops GC.
package repository

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/local"
)

// DefaultChunkSize is the chunk size of a new repository when
// Options.ChunkSize is 0: bench/chunkbench found 1 MiB grows a quarter as much
// as 4 MiB under scattered 4 KiB writes, for ~47 MiB of index memory per TiB
// stored.
const DefaultChunkSize = 1 << 20

var (
	// ErrWrongPassword means no key file of the repository opens with the
	// password given.
	ErrWrongPassword = errors.New("wrong repository password")
	// ErrNotFound means the snapshot does not exist, or the directory holds
	// no repository.
	ErrNotFound = errors.New("not found")
	// ErrExists means Init found a repository already there.
	ErrExists = errors.New("repository already exists")
)

// Options tune a repository. Zero fields take the defaults.
type Options struct {
	ChunkSize    int    // bytes per chunk for a new repository (Open uses the repository's); default DefaultChunkSize
	PackSize     int    // target pack size; default 32 MiB
	Workers      int    // parallel hash/compress/encrypt workers; default runtime.NumCPU()
	KDFTime      uint32 // Argon2id passes for new keys; default 3
	KDFMemoryKiB uint32 // Argon2id memory for new keys; default 64 MiB
	// Compression is the codec of the chunks this process stores; default
	// CompressAuto. Chunks of every codec are read whatever it is.
	Compression Compression

	// LeaseTTL is how long a lease lives without a heartbeat (re-saved every
	// LeaseTTL/4); default 2 minutes. Each lease records its holder's TTL,
	// so processes sharing a repository may use different values.
	LeaseTTL time.Duration
	// GCMargin is how much older than the oldest running operation a
	// tombstone must be before GC removes its pack; default 5 minutes. It
	// covers storage whose listings lag behind its writes.
	GCMargin time.Duration
}

func (o Options) withDefaults() Options {
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.PackSize == 0 {
		o.PackSize = 32 << 20
	}
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	if o.KDFTime == 0 {
		o.KDFTime = 3
	}
	if o.KDFMemoryKiB == 0 {
		o.KDFMemoryKiB = 64 << 10
	}
	if o.Compression == "" {
		o.Compression = CompressAuto
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2 * time.Minute
	}
	if o.GCMargin <= 0 {
		o.GCMargin = 5 * time.Minute
	}
	return o
}

// Repository is an open repository. It is safe for concurrent use.
type Repository struct {
	be     blob.Backend
	cfg    config
	opts   Options
	keys   *keys
	idx    *index
	packer *packer
	leases leaseSet

	refreshMu sync.Mutex // one refresh of the index at a time
	gcMu      sync.Mutex // one GC at a time in the process

	// Bounded memory: a fixed number of chunk buffers shared by all backups,
	// a buffer pair per restore worker slot, and Workers compression slots.
	// They are allocated on first use and kept (a free list rather than a
	// sync.Pool: reusing them avoids clearing fresh chunk buffers and the
	// garbage that doubles the heap).
	bufs     *freeList
	restBufs *freeList // 2 chunk buffers each: sealed blob and plaintext
	slots    chan *slot
	dec      *zstd.Decoder // chunks: output limited to the chunk's raw length
	zero     []byte        // ChunkSize zero bytes, never written

	closed atomic.Bool
}

// Init creates a repository in dir (created if missing) protected by
// password. It returns ErrExists if dir already holds one.
func Init(dir string, password []byte, opts Options) (*Repository, error) {
	if err := checkInitOptions(opts.withDefaults(), password); err != nil {
		return nil, err
	}
	if l, err := local.Open(dir); err == nil {
		if _, err := l.Stat(context.Background(), blob.Handle{Type: blob.ConfigFile}); err == nil {
			return nil, fmt.Errorf("init %s: %w", dir, ErrExists)
		}
	}
	be, err := local.Create(dir)
	if err != nil {
		return nil, err
	}
	return InitBackend(context.Background(), be, password, opts)
}

// InitBackend creates a repository in be protected by password. It returns
// an error matching ErrExists if be already holds a config file, and fails
// if be cannot be reached. On success the Repository owns be (Close closes
// it); on error the caller still owns it.
func InitBackend(ctx context.Context, be blob.Backend, password []byte, opts Options) (*Repository, error) {
	opts = opts.withDefaults()
	if err := checkInitOptions(opts, password); err != nil {
		return nil, err
	}
	_, err := be.Stat(ctx, blob.Handle{Type: blob.ConfigFile})
	if err == nil {
		return nil, fmt.Errorf("init %s: %w", be.Location(), ErrExists)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("init repository %s: %w", be.Location(), err)
	}
	return initBackend(ctx, be, password, opts)
}

func checkInitOptions(opts Options, password []byte) error {
	if opts.ChunkSize < minChunkSize || opts.ChunkSize > maxChunkSize || opts.ChunkSize%align != 0 {
		return fmt.Errorf("chunk size %d must be a multiple of %d in [%d, %d]", opts.ChunkSize, align, minChunkSize, maxChunkSize)
	}
	if len(password) == 0 {
		return errors.New("init repository: empty password")
	}
	return opts.Compression.check()
}

func initBackend(ctx context.Context, be blob.Backend, password []byte, opts Options) (*Repository, error) {
	master := make([]byte, masterKeyLen)
	if _, err := rand.Read(master); err != nil {
		return nil, err
	}
	kf, err := newKeyFile(password, master, opts.KDFTime, opts.KDFMemoryKiB)
	if err != nil {
		return nil, err
	}
	kb, err := json.Marshal(kf)
	if err != nil {
		return nil, err
	}
	if err := be.Save(ctx, blob.Handle{Type: blob.KeyFile, Name: newID()}, bytes.NewReader(kb)); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	k, err := deriveKeys(master)
	if err != nil {
		return nil, err
	}
	cfg := config{Version: repoVersion, ID: newID(), ChunkSize: opts.ChunkSize}
	cfg.MAC = cfg.mac(k)
	cb, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	// config last: a repository without config is not a repository, so a
	// crash during Init leaves nothing that Open would accept.
	if err := be.Save(ctx, blob.Handle{Type: blob.ConfigFile}, bytes.NewReader(cb)); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	return newRepository(be, cfg, k, opts)
}

// Open opens the repository in dir. It returns ErrWrongPassword if no key
// opens with password, and an error matching ErrNotFound if dir holds no
// repository. It loads the index into memory.
func Open(dir string, password []byte, opts Options) (*Repository, error) {
	be, err := local.Open(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open repository %s: %w", dir, ErrNotFound)
		}
		return nil, err
	}
	return OpenBackend(context.Background(), be, password, opts)
}

// OpenBackend opens the repository stored in be (see Open).
func OpenBackend(ctx context.Context, be blob.Backend, password []byte, opts Options) (*Repository, error) {
	opts = opts.withDefaults()
	if err := opts.Compression.check(); err != nil {
		return nil, fmt.Errorf("open repository %s: %w", be.Location(), err)
	}
	cb, err := readAll(ctx, be, blob.Handle{Type: blob.ConfigFile}, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open repository %s: no config file: %w", be.Location(), ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", be.Location(), err)
	}
	cfg, err := decodeConfig(cb)
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", be.Location(), err)
	}
	master, err := unlock(ctx, be, password)
	if err != nil {
		return nil, err
	}
	k, err := deriveKeys(master)
	if err != nil {
		return nil, err
	}
	if err := cfg.check(k); err != nil {
		return nil, fmt.Errorf("open repository %s: %w", be.Location(), err)
	}
	if cfg.Version < repoVersion {
		// Only after the password opened it: upgrading is a write. (A
		// config set back to an older version without its MAC is signed
		// again here: the MAC catches damage and edits of a version-3
		// config, not a deliberate downgrade by someone who can write the
		// storage.)
		cfg.Version = repoVersion
		cfg.MAC = cfg.mac(k)
		cb, err := json.MarshalIndent(cfg, "", "  ")
		if err == nil {
			err = be.Save(ctx, blob.Handle{Type: blob.ConfigFile}, bytes.NewReader(cb))
		}
		if err != nil {
			return nil, fmt.Errorf("open repository %s: upgrade to version %d: %w", be.Location(), repoVersion, err)
		}
	}
	r, err := newRepository(be, cfg, k, opts)
	if err != nil {
		return nil, err
	}
	if err := r.refresh(ctx); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// unlock tries every key file with password.
func unlock(ctx context.Context, be blob.Backend, password []byte) ([]byte, error) {
	var names []string
	err := be.List(ctx, blob.KeyFile, func(fi blob.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open repository: list keys: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("open repository %s: no key files", be.Location())
	}
	var firstErr error
	for _, name := range names {
		b, err := readAll(ctx, be, blob.Handle{Type: blob.KeyFile, Name: name}, 1<<16)
		if err == nil {
			var kf *keyFile
			if kf, err = decodeKeyFile(b); err == nil {
				var master []byte
				if master, err = kf.unwrap(password); err == nil {
					return master, nil
				}
			}
		}
		if firstErr == nil || errors.Is(firstErr, ErrWrongPassword) {
			firstErr = err
		}
	}
	if errors.Is(firstErr, ErrWrongPassword) {
		return nil, ErrWrongPassword
	}
	return nil, fmt.Errorf("open repository: %w", firstErr)
}

func newRepository(be blob.Backend, cfg config, k *keys, opts Options) (*Repository, error) {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(opts.Workers),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(maxChunkSize))
	if err != nil {
		return nil, err
	}
	r := &Repository{
		be:   be,
		cfg:  cfg,
		opts: opts,
		keys: k,
		idx:  newIndex(cfg.ChunkSize),
		dec:  dec,
		zero: make([]byte, cfg.ChunkSize),
	}
	r.packer = newPacker(be, k, r.idx, int64(min(opts.PackSize, maxPackSize/2)), cfg.ChunkSize)
	r.packer.lease = func(ctx context.Context) (func(), error) {
		l, err := r.acquireLease(ctx, leasePack)
		if err != nil {
			return nil, err
		}
		return l.release, nil
	}
	// Readers of all backups share these buffers: one per worker being
	// hashed, one being read, a few queued. They are aligned, so that a
	// source may read into them with direct I/O.
	r.bufs = newFreeList(2*opts.Workers+2, func() []byte { return alignedBuf(alignUp(cfg.ChunkSize)) })
	bufLen := alignUp(nonceLen + cfg.ChunkSize + tagLen)
	r.restBufs = newFreeList(restoreWorkers(opts), func() []byte { return alignedBuf(2 * bufLen) })
	// Compression slots are made on first use (nil until then): a process
	// that only restores or collects garbage never pays for them.
	r.slots = make(chan *slot, opts.Workers)
	for range opts.Workers {
		r.slots <- nil
	}
	return r, nil
}

// ChunkSize returns the chunk size of the repository.
func (r *Repository) ChunkSize() int { return r.cfg.ChunkSize }

// ID returns the repository's id (from its config file).
func (r *Repository) ID() string { return r.cfg.ID }

// Close finalizes the open pack (its chunks become durable but, unless a
// snapshot references them, garbage) and releases resources. Backups must be
// committed or aborted before.
func (r *Repository) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	err := r.packer.flush()
	r.packer.close()
	r.leases.close()
	r.dec.Close()
	if cerr := r.be.Close(); err == nil {
		err = cerr
	}
	return err
}

// damageError marks errors caused by the content of a stored file (as
// opposed to failures reading it).
type damageError struct{ err error }

func (e damageError) Error() string { return e.err.Error() }
func (e damageError) Unwrap() error { return e.err }

func isDamage(err error) bool {
	var d damageError
	return errors.As(err, &d)
}

func checkEntriesFit(entries []packEntry, packSize int64) error {
	if n := len(entries); n > 0 {
		if end := int64(entries[n-1].Offset) + int64(entries[n-1].Length); end > packSize {
			return damageError{fmt.Errorf("index lists chunks up to byte %d of a pack of %d bytes", end, packSize)}
		}
	}
	return nil
}

// readTrailer loads, decrypts and parses the trailer of pack name.
func (r *Repository) readTrailer(ctx context.Context, name string, size int64) ([]packEntry, error) {
	h := blob.Handle{Type: blob.PackFile, Name: name}
	var tail [packTailLen]byte
	if size < packTailLen {
		return nil, damageError{fmt.Errorf("pack %s: too short", name)}
	}
	if err := loadInto(ctx, r.be, h, tail[:], size-packTailLen); err != nil {
		return nil, fmt.Errorf("pack %s: %w", name, err)
	}
	off, n, err := trailerBounds(tail[:], size)
	if err != nil {
		return nil, damageError{fmt.Errorf("pack %s: %w", name, err)}
	}
	buf := make([]byte, n)
	if err := loadInto(ctx, r.be, h, buf, off); err != nil {
		return nil, fmt.Errorf("pack %s: %w", name, err)
	}
	return decodeTrailer(r.keys, name, buf, off)
}

// decodeTrailer decrypts and parses a sealed trailer that starts at off in
// pack name.
func decodeTrailer(k *keys, name string, sealed []byte, off int64) ([]packEntry, error) {
	plain, err := open(k.aead, nil, sealed, aadTrailer)
	if err != nil {
		return nil, damageError{fmt.Errorf("pack %s trailer: %w", name, err)}
	}
	id, entries, err := decodePackIndex(plain)
	if err != nil {
		return nil, damageError{fmt.Errorf("pack %s trailer: %w", name, err)}
	}
	if id.String() != name {
		return nil, damageError{fmt.Errorf("pack %s: trailer describes pack %v", name, id)}
	}
	if err := checkEntriesFit(entries, off); err != nil {
		return nil, fmt.Errorf("pack %s: %w", name, err)
	}
	return entries, nil
}

func listSizes(ctx context.Context, be blob.Backend, t blob.FileType) (map[string]int64, error) {
	m := make(map[string]int64)
	err := be.List(ctx, t, func(fi blob.FileInfo) error {
		m[fi.Name] = fi.Size
		return nil
	})
	return m, err
}

// readAll loads a whole object of at most limit bytes.
func readAll(ctx context.Context, be blob.Backend, h blob.Handle, limit int64) ([]byte, error) {
	var b []byte
	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		var err error
		b, err = io.ReadAll(io.LimitReader(rd, limit+1))
		if err == nil && int64(len(b)) > limit {
			err = damageError{fmt.Errorf("%v is larger than %d bytes", h, limit)}
		}
		return err
	})
	return b, err
}

// loadInto fills buf from h at off. A read cut short is damage (the object
// is shorter than expected), unless ctx ended: then it is ctx's error, so
// that a cancelled read never has a healthy copy quarantined.
func loadInto(ctx context.Context, be blob.Backend, h blob.Handle, buf []byte, off int64) error {
	return be.Load(ctx, h, len(buf), off, func(rd io.Reader) error {
		_, err := io.ReadFull(rd, buf)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return damageError{fmt.Errorf("%v is shorter than expected", h)}
		}
		return err
	})
}

// newID returns a random 128-bit id in hex.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// freeList hands out at most max buffers at a time, allocating them on
// first use and keeping them for reuse.
type freeList struct {
	free  chan []byte
	sem   chan struct{}
	alloc func() []byte
}

func newFreeList(max int, alloc func() []byte) *freeList {
	return &freeList{free: make(chan []byte, max), sem: make(chan struct{}, max), alloc: alloc}
}

// get waits for a buffer.
func (l *freeList) get(ctx context.Context) ([]byte, error) {
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case b := <-l.free:
		return b, nil
	default:
		return l.alloc(), nil
	}
}

func (l *freeList) put(b []byte) {
	l.free <- b
	<-l.sem
}
