package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// ErrBusy is returned by GC while another process uses the repository
// (backs up, restores or verifies): collecting garbage then could delete what
// that process is about to reference. Call GC again later.
var ErrBusy = errors.New("repository in use by another process; garbage collection postponed")

// fileLock is the cross-process half of the GC lock: flock(2) on one file of
// a local repository. Shared by every backup, restore and verify; exclusive
// (never waited for) by GC. flock locks belong to an open file description,
// so each holder opens the file itself and several shared holders in one
// process do not interfere. The file's content is the GC generation: a
// random id GC writes when it deleted something, so that other processes
// know their memory index may name packs that are gone.
type fileLock struct {
	path string
}

func newFileLock(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("repository lock file: %w", err)
	}
	return &fileLock{path: path}, f.Close()
}

// held is a taken lock.
type held struct{ f *os.File }

func (h held) release() {
	if h.f != nil {
		h.f.Close() // closing the description drops the flock
	}
}

// generation returns the GC generation in the lock file.
func (h held) generation() (string, error) {
	b := make([]byte, 64)
	n, err := h.f.ReadAt(b, 0)
	if err != nil && n == 0 && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read repository lock file: %w", err)
	}
	return strings.TrimSpace(string(b[:n])), nil
}

// setGeneration writes a new GC generation (holder must be exclusive).
func (h held) setGeneration(gen string) error {
	if err := h.f.Truncate(0); err != nil {
		return err
	}
	if _, err := h.f.WriteAt([]byte(gen+"\n"), 0); err != nil {
		return err
	}
	return h.f.Sync()
}

// lockPoll is how often a waiting shared lock retries: flock cannot wait
// with a context, and a GC holds the lock for seconds at most.
const lockPoll = 50 * time.Millisecond

// shared waits for the shared lock (a running GC elsewhere ends soon).
func (l *fileLock) shared(ctx context.Context) (held, error) {
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return held{}, fmt.Errorf("repository lock file: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return held{f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return held{}, fmt.Errorf("lock repository: %w", err)
		}
		if ctx.Err() != nil {
			f.Close()
			return held{}, ctx.Err()
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// tryExclusive takes the exclusive lock if nobody holds the lock, else
// returns ErrBusy.
func (l *fileLock) tryExclusive() (held, error) {
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return held{}, fmt.Errorf("repository lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return held{}, ErrBusy
		}
		return held{}, fmt.Errorf("lock repository: %w", err)
	}
	return held{f}, nil
}

// enterShared takes the shared lock of both levels for a backup, restore or
// verify, and reloads the memory index when another process's GC changed the
// repository since it was loaded, or when stale (may be nil) says the index
// lacks something the caller needs (packs other processes wrote since). The
// returned release drops both.
func (r *Repository) enterShared(ctx context.Context, stale func() bool) (release func(), err error) {
	r.gcLock.RLock()
	if r.flock == nil {
		return r.gcLock.RUnlock, nil
	}
	h, err := r.flock.shared(ctx)
	if err != nil {
		r.gcLock.RUnlock()
		return nil, err
	}
	gen, err := h.generation()
	if err == nil && (gen != r.currentGen() || stale != nil && stale()) {
		// No GC can run anywhere while h is held, so gen is stable; the
		// reload needs this process's operations out of the index.
		r.gcLock.RUnlock()
		r.gcLock.Lock()
		if gen != r.gen || stale != nil && stale() {
			err = r.reloadIndex(ctx)
			if err == nil {
				r.gen = gen
			}
		}
		r.gcLock.Unlock()
		r.gcLock.RLock()
	}
	if err != nil {
		h.release()
		r.gcLock.RUnlock()
		return nil, err
	}
	return func() {
		h.release()
		r.gcLock.RUnlock()
	}, nil
}

// currentGen reads r.gen; callers hold gcLock at least shared, and r.gen is
// written only under gcLock held exclusively.
func (r *Repository) currentGen() string { return r.gen }

// reloadIndex replaces the memory index with what storage holds now,
// keeping the chunks pending in this process's open pack.
func (r *Repository) reloadIndex(ctx context.Context) error {
	fresh := newIndex()
	if err := r.loadIndexInto(ctx, fresh); err != nil {
		return err
	}
	x := r.idx
	x.mu.Lock()
	x.packs, x.packNum, x.chunks = fresh.packs, fresh.packNum, fresh.chunks
	x.mu.Unlock()
	return nil
}
