package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/repository/blob"
)

// RestoreVolume writes the volume vm to dst (a regular file or block device
// opened for writing). Workers fetch, authenticate, decompress and re-hash
// chunks in parallel and write them at their offsets; no byte of a chunk is
// written before its GCM tag and its id check out. A damaged or missing
// chunk fails the restore with an error naming the chunk and its offset.
//
// The first vm.Size bytes of a regular file are made a hole first (the file
// is truncated, or, if it is larger, the range is hole-punched and the bytes
// beyond the volume are kept), so zero chunks are not written. On a block device zero chunks are zeroed (hole punch
// or, failing that, written zeros). RestoreVolume does not sync dst; call
// dst.Sync when the restore must be durable.
func (r *Repository) RestoreVolume(ctx context.Context, vm *VolumeManifest, dst *os.File, progress func(done int64)) error {
	// The lease keeps GC from removing what the restore reads, except packs
	// marked deleted before it began (fetchChunk looks again when one is
	// gone; see "Reads of marked packs" in the package doc); a backup
	// written by another process may be in packs this one has not indexed
	// yet.
	release, err := r.begin(ctx, leaseRestore)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer release()
	if err := vm.check(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// Every chunk must be there before dst is touched: a restore that
	// cannot finish must not have truncated the target first.
	if err := r.missingChunk(vm); err != nil {
		return fmt.Errorf("restore volume %q: nothing was written: %w", vm.VolumeID, err)
	}
	fi, err := dst.Stat()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	regular := fi.Mode().IsRegular()
	switch {
	case regular:
		if err := clearFile(dst, fi.Size(), vm.Size); err != nil {
			return fmt.Errorf("restore to %s: %w", dst.Name(), err)
		}
		if err := preallocate(dst, vm); err != nil {
			return fmt.Errorf("restore to %s: %w", dst.Name(), err)
		}
	case fi.Mode()&os.ModeDevice != 0:
		end, err := dst.Seek(0, io.SeekEnd)
		if err != nil {
			return fmt.Errorf("restore to %s: %w", dst.Name(), err)
		}
		if end < vm.Size {
			return fmt.Errorf("restore to %s: device has %d bytes, the volume needs %d", dst.Name(), end, vm.Size)
		}
	default:
		return fmt.Errorf("restore to %s: not a regular file or block device", dst.Name())
	}

	w := &restoreWriter{dst: dst, direct: openDirect(dst)}
	defer w.close()
	zero := func(off, n int64) error {
		if regular {
			return nil // cleared above
		}
		return zeroRange(dst, off, n)
	}
	return r.restoreChunks(ctx, vm, w, zero, dst.Name(), progress)
}

// RangeWriter is a restore target that is not a file: a disk written
// through QEMU. Zero makes n bytes at off read as zeros.
type RangeWriter interface {
	io.WriterAt
	Zero(ctx context.Context, off, n int64) error
}

// RestoreVolumeTo writes the volume vm to dst like RestoreVolume does to a
// file: every chunk present is checked before dst is touched, every chunk
// authenticated before it is written, zero chunks zeroed through dst.Zero
// (one call per run of them). It does not flush dst.
func (r *Repository) RestoreVolumeTo(ctx context.Context, vm *VolumeManifest, dst RangeWriter, name string, progress func(done int64)) error {
	release, err := r.begin(ctx, leaseRestore)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer release()
	if err := vm.check(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// Every chunk must be there before dst is touched: a restore that
	// cannot finish must not have truncated the target first.
	if err := r.missingChunk(vm); err != nil {
		return fmt.Errorf("restore volume %q: nothing was written: %w", vm.VolumeID, err)
	}
	cs := int64(vm.ChunkSize)
	for i := 0; i < len(vm.Chunks); {
		if !vm.Chunks[i].IsZero() {
			i++
			continue
		}
		j := i
		for j < len(vm.Chunks) && vm.Chunks[j].IsZero() {
			j++
		}
		off := int64(i) * cs
		n := min(int64(j)*cs, vm.Size) - off
		if err := dst.Zero(ctx, off, n); err != nil {
			return fmt.Errorf("restore volume %q to %s: zero %d bytes at %d: %w", vm.VolumeID, name, n, off, err)
		}
		i = j
	}
	w := &restoreWriter{to: dst}
	return r.restoreChunks(ctx, vm, w, func(int64, int64) error { return nil }, name, progress)
}

// restoreChunks writes every chunk of vm through w, zero chunks through
// zero, in parallel.
func (r *Repository) restoreChunks(ctx context.Context, vm *VolumeManifest, w *restoreWriter, zero func(off, n int64) error, name string, progress func(done int64)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cs := int64(vm.ChunkSize)
	work := make(chan int, restoreWorkers(r.opts))
	var wg sync.WaitGroup
	var pmu sync.Mutex
	var done, reported int64
	advance := func(n int64) {
		if progress == nil {
			return
		}
		pmu.Lock()
		done += n
		if done-reported >= progressEvery {
			reported = done
			progress(done)
		}
		pmu.Unlock()
	}
	for range restoreWorkers(r.opts) {
		wg.Go(func() {
			h := newDomainHasher(r.keys, vm.Domain)
			for i := range work {
				if ctx.Err() != nil {
					continue
				}
				id := vm.Chunks[i]
				off := int64(i) * cs
				n := min(cs, vm.Size-off)
				var err error
				if id.IsZero() {
					err = zero(off, n)
				} else {
					var buf []byte
					if buf, err = r.restBufs.get(ctx); err == nil {
						half := len(buf) / 2
						err = r.restoreChunk(ctx, h, id, buf[:half], buf[half:], w, off, n)
						r.restBufs.put(buf)
					}
				}
				if err != nil {
					cancel(fmt.Errorf("restore volume %q to %s: %w", vm.VolumeID, name, err))
					continue
				}
				advance(n)
			}
		})
	}
	for i := range vm.Chunks {
		select {
		case work <- i:
			continue
		case <-ctx.Done():
		}
		break
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if progress != nil {
		progress(vm.Size)
	}
	return nil
}

// restoreChunk fetches, verifies and writes one chunk of n bytes at off.
func (r *Repository) restoreChunk(ctx context.Context, h hasher, id ChunkID, buf, out []byte, w *restoreWriter, off, n int64) error {
	plain, err := r.fetchChunk(ctx, h, id, buf, out, off, n)
	if err != nil {
		return err
	}
	return w.writeAt(plain, off)
}

// fetchChunk loads, authenticates and decompresses the chunk id of n bytes
// at offset off of a volume (off only names it in errors). buf holds the
// sealed blob and out the plaintext, which it returns (a prefix of out).
//
// A copy that fails authentication or its id check is quarantined (see
// quarantine.go) and the next copy, if any, is read instead; the error
// names the damaged copy when none is left. A pack found gone makes it
// refresh the index once and look the chunk up again.
func (r *Repository) fetchChunk(ctx context.Context, h hasher, id ChunkID, buf, out []byte, off, n int64) ([]byte, error) {
	var damage error
	refreshed := false
	for range maxCopies {
		loc, pack, ok := r.idx.lookup(id)
		if !ok {
			if damage != nil {
				return nil, damage
			}
			return nil, fmt.Errorf("chunk %v at offset %d is missing from the repository (run verify)", id, off)
		}
		if int64(loc.rawLen) != n || int(loc.length) > len(buf) {
			return nil, fmt.Errorf("chunk %v at offset %d: stored with %d bytes, the volume needs %d", id, off, loc.rawLen, n)
		}
		blob := buf[:loc.length]
		err := loadInto(ctx, r.be, packHandle(pack), blob, int64(loc.offset))
		if errors.Is(err, fs.ErrNotExist) && !refreshed {
			// The pack was marked deleted before this operation began and
			// was the only copy it knew, and GC removed it once a live
			// copy existed (see the package doc, "Reads of marked
			// packs"). The index files naming that copy were on storage
			// before the pack went: look again.
			refreshed = true
			if err := r.refresh(ctx); err != nil {
				return nil, fmt.Errorf("chunk %v at offset %d: pack %v is gone: %w", id, off, pack, err)
			}
			continue
		}
		if err == nil {
			var plain []byte
			if plain, err = openChunk(r.keys, r.dec, h, id, loc, blob, out); err == nil {
				return plain, nil
			}
			err = damageError{err}
		}
		err = fmt.Errorf("chunk %v at offset %d (pack %v): %w", id, off, pack, err)
		if !isDamage(err) || ctx.Err() != nil {
			return nil, err // storage failed, or the read was cut short by cancellation: not damage
		}
		damage = fmt.Errorf("%w (quarantined: the next backup holding this data stores it again)", err)
		if qerr := r.quarantine(context.WithoutCancel(ctx), []badCopy{{pack: pack, offset: loc.offset, id: id}}, err.Error()); qerr != nil {
			return nil, fmt.Errorf("%w; %v", err, qerr)
		}
	}
	return nil, damage
}

// maxCopies bounds the copies of one chunk a read tries.
const maxCopies = 8

// restoreWriter writes restored chunks: block-aligned ones through an
// O_DIRECT descriptor when there is one (see direct.go), the rest through
// dst, one at a time (concurrent buffered writes to one file contend for its
// inode lock in the kernel, which spins and burns CPU).
type restoreWriter struct {
	to     io.WriterAt // not a file: write through it only
	dst    *os.File
	direct *os.File // nil: none
	mu     sync.Mutex
}

func (w *restoreWriter) writeAt(b []byte, off int64) error {
	if w.to != nil {
		_, err := w.to.WriteAt(b, off)
		return err
	}
	if w.direct != nil && off%align == 0 && isAligned(b) {
		if _, err := w.direct.WriteAt(b, off); err == nil {
			return nil
		}
		// Refused (alignment rules of an odd device): write buffered.
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.dst.WriteAt(b, off)
	return err
}

func (w *restoreWriter) close() {
	if w.direct != nil {
		w.direct.Close()
	}
}

func packHandle(id packID) blob.Handle { return blob.Handle{Type: blob.PackFile, Name: id.String()} }

// clearFile makes the first size bytes of the regular file f (now cur bytes
// long) a hole, so that zero chunks need no writing. Bytes beyond size of a
// larger file are kept.
func clearFile(f *os.File, cur, size int64) error {
	if cur <= size {
		if err := f.Truncate(0); err != nil {
			return err
		}
		return f.Truncate(size)
	}
	if size == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return writeZeros(f, 0, size)
	}
	return err
}

// preallocate reserves the blocks of the volume's data (not its holes) in
// the regular file f: a full disk fails the restore before it starts, and
// writing into allocated extents costs the kernel less than allocating
// while writing. File systems without fallocate are fine too.
func preallocate(f *os.File, vm *VolumeManifest) error {
	cs := int64(vm.ChunkSize)
	for i := 0; i < len(vm.Chunks); {
		if vm.Chunks[i].IsZero() {
			i++
			continue
		}
		j := i
		for j < len(vm.Chunks) && !vm.Chunks[j].IsZero() {
			j++
		}
		off := int64(i) * cs
		end := min(int64(j)*cs, vm.Size)
		err := unix.Fallocate(int(f.Fd()), 0, off, end-off)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			return nil
		}
		if errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("not enough space for %d bytes of volume data: %w", usedBytes(vm), err)
		}
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}

func usedBytes(vm *VolumeManifest) int64 {
	var n int64
	for i, c := range vm.Chunks {
		if !c.IsZero() {
			n += min(int64(vm.ChunkSize), vm.Size-int64(i)*int64(vm.ChunkSize))
		}
	}
	return n
}

var zeros = make([]byte, 1<<20)

// zeroRange makes n bytes at off of a block device read as zeros.
func zeroRange(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return writeZeros(f, off, n)
}

func writeZeros(f *os.File, off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// restoreWorkers is how many chunks a restore works on at once: more than
// the CPUs, so that while some wait for their (direct) write to reach the
// disk, others decrypt and decompress.
func restoreWorkers(o Options) int { return 4 * o.Workers }
