package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// DefaultReaderCache is how many plaintext chunks a VolumeReader keeps by
// default: 64, 64 MiB with 1 MiB chunks.
const DefaultReaderCache = 64

// readAheadBytes is how far a VolumeReader fetches ahead of a sequential
// reader: 16 MiB, at least 4 chunks.
const readAheadBytes = 16 << 20

// ErrReaderClosed is returned by reads of a closed VolumeReader.
var ErrReaderClosed = errors.New("volume reader closed")

// VolumeReader reads one volume of a snapshot at any offset without
// restoring it: what csbs mount and csbs export serve. Chunks are fetched on
// demand, authenticated like a restore's, and kept in a bounded cache;
// a sequential reader gets the next chunks fetched ahead of it.
//
// A VolumeReader holds a lease from OpenVolume to Close, like a restore: GC
// removes nothing it may read, even if the snapshot is deleted while it is
// open. It is safe for concurrent use.
type VolumeReader struct {
	r       *Repository
	vm      *VolumeManifest
	ctx     context.Context // cancelled by Close: ends fetches in flight
	cancel  context.CancelFunc
	release func()
	cap     int // chunks kept
	ahead   int // chunks fetched ahead of a sequential reader

	mu       sync.Mutex
	cache    map[int]*cachedChunk // by chunk index
	lru      []int                // chunk indexes, least recently used first
	lastRead int                  // chunk index of the last read, for read-ahead
	closed   bool
}

// cachedChunk is a chunk being fetched (ready open) or fetched.
type cachedChunk struct {
	ready chan struct{}
	data  []byte // the plaintext, len = the chunk's length in the volume
	err   error
}

// OpenVolume returns a reader of vm. cacheChunks bounds the chunks kept in
// memory (0: DefaultReaderCache). A chunk the repository lacks is found
// here (as CheckVolume does); damage inside a pack shows when the chunk is
// read, as an error naming it and its offset.
func (r *Repository) OpenVolume(ctx context.Context, vm *VolumeManifest, cacheChunks int) (*VolumeReader, error) {
	if cacheChunks <= 0 {
		cacheChunks = DefaultReaderCache
	}
	release, err := r.begin(ctx, leaseRestore)
	if err != nil {
		return nil, fmt.Errorf("open volume %q: %w", vm.VolumeID, err)
	}
	if err := r.CheckVolume(ctx, vm); err != nil {
		release()
		return nil, err
	}
	// The reader outlives ctx (a mount lives until unmounted); Close ends it.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ahead := max(4, readAheadBytes/vm.ChunkSize)
	return &VolumeReader{r: r, vm: vm, ctx: rctx, cancel: cancel, release: release, cap: max(cacheChunks, ahead+2), ahead: ahead,
		cache: map[int]*cachedChunk{}, lastRead: -2}, nil
}

// Size is the volume's size in bytes.
func (v *VolumeReader) Size() int64 { return v.vm.Size }

// Manifest is the volume's manifest.
func (v *VolumeReader) Manifest() *VolumeManifest { return v.vm }

// Extent is a run of a volume.
type Extent struct {
	Offset, Length int64
	Data           bool // false: a hole or all zeros, read as zeros
}

// Extents describes [off, off+n) (clipped to the volume) as runs of data
// and zeros, at chunk granularity: what NBD block status and SEEK_DATA
// report so that clients skip what holds nothing.
func (v *VolumeReader) Extents(off, n int64) []Extent {
	end := min(off+n, v.vm.Size)
	cs := int64(v.vm.ChunkSize)
	var out []Extent
	for off < end {
		i := off / cs
		data := !v.vm.Chunks[i].IsZero()
		next := min((i+1)*cs, end)
		if k := len(out) - 1; k >= 0 && out[k].Data == data {
			out[k].Length += next - off
		} else {
			out = append(out, Extent{Offset: off, Length: next - off, Data: data})
		}
		off = next
	}
	return out
}

// ReadAt reads len(p) bytes at off. Reads past the end return io.EOF with
// the bytes that were there.
func (v *VolumeReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read volume %q: negative offset %d", v.vm.VolumeID, off)
	}
	cs := int64(v.vm.ChunkSize)
	n := 0
	for n < len(p) && off < v.vm.Size {
		i := int(off / cs)
		in := off - int64(i)*cs
		if v.vm.Chunks[i].IsZero() {
			m := copy(p[n:], zeroRun(min(int64(len(p)-n), min(cs, v.vm.Size-int64(i)*cs)-in)))
			n, off = n+m, off+int64(m)
			continue
		}
		c, err := v.chunk(i)
		if err != nil {
			return n, err
		}
		m := copy(p[n:], c[in:])
		n, off = n+m, off+int64(m)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// zeroRun returns min(n, len(zeros)) zero bytes; callers loop.
func zeroRun(n int64) []byte { return zeros[:min(n, int64(len(zeros)))] }

// chunk returns the plaintext of chunk i, from the cache or fetched, and
// starts read-ahead when the reads stream forward: i is at most ahead
// chunks from the last read, either way, since a client with several
// requests in flight (qemu-img convert, a kernel's read-ahead) sends them
// a little out of order.
func (v *VolumeReader) chunk(i int) ([]byte, error) {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil, ErrReaderClosed
	}
	c := v.getLocked(i)
	if d := i - v.lastRead; d >= -v.ahead && d <= v.ahead {
		for k := i + 1; k <= i+v.ahead && k < len(v.vm.Chunks); k++ {
			if !v.vm.Chunks[k].IsZero() {
				v.getLocked(k)
			}
		}
	}
	v.lastRead = i
	v.mu.Unlock()
	select {
	case <-c.ready:
	case <-v.ctx.Done():
		return nil, ErrReaderClosed
	}
	return c.data, c.err
}

// getLocked returns the cache entry of chunk i, starting its fetch when it
// has none, and marks it most recently used.
func (v *VolumeReader) getLocked(i int) *cachedChunk {
	if c, ok := v.cache[i]; ok {
		for k, j := range v.lru {
			if j == i {
				v.lru = append(append(v.lru[:k:k], v.lru[k+1:]...), i)
				break
			}
		}
		return c
	}
	for len(v.lru) >= v.cap {
		delete(v.cache, v.lru[0])
		v.lru = v.lru[1:]
	}
	c := &cachedChunk{ready: make(chan struct{})}
	v.cache[i] = c
	v.lru = append(v.lru, i)
	go v.fetch(i, c)
	return c
}

// fetch reads chunk i into c. A failed fetch is not cached: the next read
// tries again.
func (v *VolumeReader) fetch(i int, c *cachedChunk) {
	defer close(c.ready)
	cs := int64(v.vm.ChunkSize)
	off := int64(i) * cs
	n := min(cs, v.vm.Size-off)
	buf, err := v.r.restBufs.get(v.ctx)
	if err != nil {
		c.err = err
	} else {
		half := len(buf) / 2
		var plain []byte
		plain, c.err = v.r.fetchChunk(v.ctx, newDomainHasher(v.r.keys, v.vm.Domain), v.vm.Chunks[i], buf[:half], buf[half:], off, n)
		if c.err == nil {
			c.data = append([]byte(nil), plain...)
		}
		v.r.restBufs.put(buf)
	}
	if c.err != nil {
		c.err = fmt.Errorf("read volume %q: %w", v.vm.VolumeID, c.err)
		v.mu.Lock()
		if v.cache[i] == c {
			delete(v.cache, i)
			for k, j := range v.lru {
				if j == i {
					v.lru = append(v.lru[:k:k], v.lru[k+1:]...)
					break
				}
			}
		}
		v.mu.Unlock()
	}
}

// Close ends the reader and its lease. Reads in flight fail with
// ErrReaderClosed. Closing twice is harmless.
func (v *VolumeReader) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	v.cache, v.lru = nil, nil
	v.mu.Unlock()
	v.cancel()
	v.release()
	return nil
}
