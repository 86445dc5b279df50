package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/compute"
)

// noTracking is why the changes of a volume read live are unknown: only
// reflink clones can be compared.
const noTracking = "read live (no reflink clone): changes since the earlier backup are unknown"

// fileReader is a compute.VolumeReader over an open image file or block
// device (the clone of a reflink snapshot, or the live volume). Image files
// hold guest-visible bytes as they are (raw images).
type fileReader struct {
	f    *os.File
	size int64
	// uncache drops what was read from the page cache (a clone's pages:
	// the clone is a new inode, so its cache is the backup's alone, and
	// keeping it would evict what the host and its guests use — a whole
	// disk's worth per backup).
	uncache bool
	// direct, when set, is the same file opened with O_DIRECT (a clone):
	// aligned reads go through it, from the disk straight into the
	// caller's buffer, with no copy in the page cache. Reads it cannot
	// take (an unaligned buffer, offset or length; a file system that
	// refuses them: noDirect) go through f.
	direct   *os.File
	noDirect atomic.Bool
	// changes are what the extent comparison found (reflink snapshots);
	// nil: unknown, see noTracking.
	changes *compute.Changes
}

var _ compute.VolumeReader = (*fileReader)(nil)

func (r *fileReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	if rest := r.size - off; int64(len(p)) > rest {
		n, err := r.readAt(p[:rest], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return r.readAt(p, off)
}

// dioAlign is the alignment of buffers, offsets and lengths that direct
// reads take: a page, which satisfies every logical block size.
const dioAlign = 4096

func (r *fileReader) readAt(p []byte, off int64) (int, error) {
	if r.direct != nil && !r.noDirect.Load() && len(p) > 0 &&
		uintptr(unsafe.Pointer(&p[0]))%dioAlign == 0 && off%dioAlign == 0 && len(p)%dioAlign == 0 {
		n, err := r.direct.ReadAt(p, off)
		if !errors.Is(err, syscall.EINVAL) {
			return n, err
		}
		r.noDirect.Store(true) // the file system refuses direct reads after all
	}
	n, err := r.f.ReadAt(p, off)
	r.dropCache(off, n)
	return n, err
}

// dropCache advises the kernel to drop what r read of a clone from the
// page cache: [off, off+n) and the 16 MiB before it, since pages read a
// moment ago may not be droppable yet (still on a CPU's LRU batch). The
// rest goes when the snapshot is released. Advice only: errors do not
// matter.
func (r *fileReader) dropCache(off int64, n int) {
	const lag = 16 << 20
	if r.uncache && n > 0 {
		start := max(0, off-lag)
		_ = unix.Fadvise(int(r.f.Fd()), start, off+int64(n)-start, unix.FADV_DONTNEED)
	}
}

// Allocated asks the file system for the data regions (SEEK_DATA and
// SEEK_HOLE); where it cannot tell, the whole volume is one extent.
func (r *fileReader) Allocated(ctx context.Context) ([]compute.Extent, error) {
	const seekData, seekHole = 3, 4
	fd := int(r.f.Fd())
	var out []compute.Extent
	for pos := int64(0); pos < r.size; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start, err := unix.Seek(fd, pos, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // only a hole up to the end
		}
		if err != nil {
			if pos == 0 {
				return []compute.Extent{{Off: 0, Len: r.size}}, nil // not supported
			}
			return nil, fmt.Errorf("find data in %s: %w", r.f.Name(), err)
		}
		if start >= r.size {
			break
		}
		end, err := unix.Seek(fd, start, seekHole)
		if err != nil {
			return nil, fmt.Errorf("find holes in %s: %w", r.f.Name(), err)
		}
		end = min(end, r.size)
		if end <= start { // should not happen; do not loop forever
			end = r.size
		}
		out = compute.AppendExtent(out, compute.Extent{Off: start, Len: end - start})
		pos = end
	}
	return out, nil
}

// Changed is what the snapshot's extent comparison found.
func (r *fileReader) Changed(context.Context) (compute.Changes, error) {
	if r.changes == nil {
		return compute.NoChanges(noTracking), nil
	}
	ch := *r.changes
	ch.Extents = append([]compute.Extent(nil), ch.Extents...)
	return ch, nil
}

// restore is a restore of a server of the inventory: its stop command has
// run; its start command runs on Finish when asked.
type restore struct {
	d *Driver
	s compute.Server
}

// Restore runs the server's stop command (nothing when it has none) and
// returns the restore that writes its image files.
func (d *Driver) Restore(ctx context.Context, s compute.Server) (compute.Restore, error) {
	if err := d.RunCommand(ctx, s.StopCommand); err != nil {
		return nil, fmt.Errorf("stop server %s before restoring (nothing was written): %w", s.ID, err)
	}
	return &restore{d: d, s: s}, nil
}

// Open opens the image file or block device of v for writing.
func (r *restore) Open(ctx context.Context, v compute.Volume) (compute.VolumeWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(v.Path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &FileWriter{f: f}, nil
}

// Finish runs the start command when powerOn. The kept clones stay valid:
// the restore's writes and punched holes give the image other blocks than
// the clones share, so the next backup's extent comparison sees them as
// changes.
func (r *restore) Finish(ctx context.Context, powerOn bool) error {
	if !powerOn {
		return nil
	}
	if err := r.d.RunCommand(ctx, r.s.StartCommand); err != nil {
		return fmt.Errorf("every disk was restored, but starting server %s failed: %w", r.s.ID, err)
	}
	return nil
}

// FileWriter is a compute.VolumeWriter over an image file or block device.
// File gives the file itself to callers that write files best (holes,
// direct I/O).
type FileWriter struct {
	f *os.File
}

// File is the open file the writer writes.
func (w *FileWriter) File() *os.File { return w.f }

// WriteAt writes p at off.
func (w *FileWriter) WriteAt(p []byte, off int64) (int, error) { return w.f.WriteAt(p, off) }

// Zero punches a hole, or writes zeros where that is not supported.
func (w *FileWriter) Zero(_ context.Context, off, n int64) error {
	err := unix.Fallocate(int(w.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := w.f.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// Close syncs and closes the file.
func (w *FileWriter) Close() error {
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// OpenWriter opens an image file or block device for writing guest-visible
// bytes (a raw image).
func OpenWriter(path string) (*FileWriter, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &FileWriter{f: f}, nil
}
