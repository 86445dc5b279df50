package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"sync"

	"github.com/csbs/csbs/internal/repository/blob"
)

// refresh applies the index files this process has not seen yet: the index
// files of packs other processes wrote and the consolidated files (with
// tombstones) of GC runs. Every backup, restore, verify and CheckVolume
// calls it first, so a process deduplicates against, and restores from,
// what storage holds, and never against what GC marked deleted before the
// operation began.
//
// It then applies the quarantine records not seen yet (quarantine.go), so
// no copy another process found damaged is used.
func (r *Repository) refresh(ctx context.Context) error {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	if err := r.refreshIndex(ctx); err != nil {
		return err
	}
	return r.refreshQuarantine(ctx)
}

// refreshIndex applies the index files not seen yet; the caller holds
// refreshMu.
func (r *Repository) refreshIndex(ctx context.Context) error {
	// An index file can vanish from a listing because a GC superseded it
	// while the listing ran, its superseding file written too late to be
	// listed. A file missing without a known successor is settled only
	// after a listing that began once the first had ended: the successor
	// was on storage by then. (Three listings in a row can only disagree if
	// GCs superseded the same files again and again meanwhile.)
	for attempt := 1; ; attempt++ {
		listed, epoch, err := r.loadNew(ctx)
		if err != nil {
			return err
		}
		if attempt == 3 || !r.idx.unexplained(listed, epoch) {
			r.idx.dropMissing(listed, epoch)
			return nil
		}
	}
}

// loadNew lists the index files and applies those not seen yet. It returns
// every name listed and the listing's epoch.
func (r *Repository) loadNew(ctx context.Context) (map[string]bool, uint32, error) {
	var todo []blob.FileInfo
	listed := make(map[string]bool)
	var bytes, packs, entries int64
	epoch := r.idx.beginListing()
	err := r.be.List(ctx, blob.IndexFile, func(fi blob.FileInfo) error {
		listed[fi.Name] = true
		if !r.idx.seen(fi.Name, fi.ModTime) {
			todo = append(todo, fi)
			bytes += fi.Size
			p, e := indexFileCounts(fi.Name, fi.Size)
			packs += p
			entries += e
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list index: %w", err)
	}
	if len(todo) == 0 {
		return listed, epoch, nil
	}
	// Files are read in parallel and applied one by one as they come, so
	// memory holds the entries once (in batch, sized from the names and
	// sizes of the files) plus the files being decoded.
	batch := make([]entry, 0, entries+16)
	r.idx.reserve(int(packs))
	work := make(chan blob.FileInfo)
	done := make(chan parsedFile)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range min(r.opts.Workers, len(todo)) {
		wg.Go(func() {
			for fi := range work {
				f, err := r.readIndexFile(ctx, fi)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				done <- f
			}
		})
	}
	go func() {
		for _, fi := range todo {
			work <- fi
		}
		close(work)
		wg.Wait()
		close(done)
	}()
	var sinceGC int64
	for f := range done {
		if f.name == "" {
			continue // removed meanwhile
		}
		r.idx.mu.Lock()
		r.idx.applyLocked(f, &batch)
		r.idx.mu.Unlock()
		// A large load (the first one of a big repository) turns every
		// file it reads into garbage at once; the Go runtime would let the
		// heap grow to twice the index before collecting. Collecting as we
		// go keeps the peak near the index itself (the index is pointer-
		// free, so a collection costs little).
		if sinceGC += f.size; bytes > bulkLoad && sinceGC > bulkLoad/8 {
			runtime.GC()
			sinceGC = 0
		}
	}
	r.idx.mu.Lock()
	r.idx.mergeLocked(batch)
	r.idx.mu.Unlock()
	if firstErr != nil {
		return nil, 0, firstErr // a file not applied: nothing can be concluded from missing ones
	}
	return listed, epoch, nil
}

// readIndexFile reads and decodes one index file. A damaged file (fails
// authentication or decoding) comes back marked damaged: its chunks count
// as absent, so backups store them again; Verify reports it and GC
// re-indexes its packs from their trailers if a snapshot needs them. A file
// removed meanwhile (consolidated by GC) comes back with an empty name.
func (r *Repository) readIndexFile(ctx context.Context, fi blob.FileInfo) (parsedFile, error) {
	f := parsedFile{name: fi.Name, mtime: fi.ModTime, size: fi.Size}
	var b []byte
	var err error
	if fi.Size > 0 && fi.Size <= maxIndexFile {
		b = make([]byte, fi.Size) // one buffer, decrypted in place
		err = loadInto(ctx, r.be, blob.Handle{Type: blob.IndexFile, Name: fi.Name}, b, 0)
	} else {
		b, err = readAll(ctx, r.be, blob.Handle{Type: blob.IndexFile, Name: fi.Name}, maxIndexFile)
	}
	if isNotExist(err) {
		return parsedFile{}, nil
	}
	if isDamage(err) {
		f.damaged = true
		return f, nil
	}
	if err != nil {
		return parsedFile{}, fmt.Errorf("index %s: %w", fi.Name, err)
	}
	plain, err := open(r.keys.aead, b[min(nonceLen, len(b)):min(nonceLen, len(b))], b, aadIndex)
	if err != nil {
		f.damaged = true
		return f, nil
	}
	if f.gen, f.supersedes, f.packs, err = decodeIndexFile(fi.Name, plain); err != nil {
		f.damaged = true
		return f, nil
	}
	f.v1 = bytes.HasPrefix(plain, []byte(indexMagic))
	return f, nil
}

// decodeIndexFile decodes the plaintext of index/<name>: a pack index
// (named after its pack) or a consolidated index.
func decodeIndexFile(name string, plain []byte) (gen uint64, supersedes []string, packs []parsedPack, err error) {
	if bytes.HasPrefix(plain, []byte(indexMagic)) {
		id, entries, err := decodePackIndex(plain)
		if err != nil {
			return 0, nil, nil, err
		}
		if id.String() != name {
			return 0, nil, nil, fmt.Errorf("index %s describes pack %v", name, id)
		}
		return 0, nil, []parsedPack{{id: id, entries: entries}}, nil
	}
	return decodeIndex2(plain)
}

// bulkLoad is the size of index files above which refresh collects garbage
// as it loads.
const bulkLoad = 32 << 20

func isNotExist(err error) bool { return err != nil && errors.Is(err, fs.ErrNotExist) }
