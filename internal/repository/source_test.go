package repository

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// memDisk is an in-memory volume: a Source's data and a RangeWriter.
type memDisk struct {
	mu sync.Mutex
	b  []byte
}

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.b[off:], p), nil
}

func (m *memDisk) Zero(_ context.Context, off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.b[off : off+n])
	return nil
}

// TestVolumeFromChangedExtents: what a backup from a Source reads, and that
// its manifest restores the source exactly whatever it reused.
func TestVolumeFromChangedExtents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, _ := newRepo(t, testOpts)
	const cs = 64 << 10
	const size = 16 * cs
	rng := rand.New(rand.NewPCG(1, 2))
	base := make([]byte, size)
	copy(base, randomBytes(rng, 8*cs))
	all := []Range{{0, size}}
	b := r.NewBackup()
	parent, st, err := b.VolumeFrom(ctx, Source{Name: "base", Data: &memDisk{b: base}, Size: size, Allocated: []Range{{0, 8 * cs}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*parent}}); err != nil {
		t.Fatal(err)
	}
	if st.ReadBytes != 8*cs {
		t.Errorf("full backup read %d bytes, want only the allocated %d", st.ReadBytes, 8*cs)
	}

	// The same base backed up in another dedup domain (another project).
	ob := r.NewBackupIn("another project")
	otherParent, _, err := ob.VolumeFrom(ctx, Source{Name: "base", Data: &memDisk{b: base}, Size: size, Allocated: []Range{{0, 8 * cs}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*otherParent}}); err != nil {
		t.Fatal(err)
	}

	// The new state: chunk 2 rewritten, a write across chunks 5/6.
	now := bytes.Clone(base)
	copy(now[2*cs:], bytes.Repeat([]byte{0xab}, 100))
	copy(now[6*cs-10:], bytes.Repeat([]byte{0xcd}, 20))
	changed := []Range{{2 * cs, 100}, {6*cs - 10, 20}}

	for _, tt := range []struct {
		name     string
		src      Source
		parent   *VolumeManifest
		wantRead int64
		ok       bool
	}{
		{"changes known: only touched chunks read", Source{Allocated: all, ChangesKnown: true, Changed: changed}, parent, 3 * cs, true},
		{"changes unknown: everything allocated read", Source{Allocated: all}, parent, size, true},
		{"no parent: everything read", Source{Allocated: all, ChangesKnown: true, Changed: changed}, nil, size, true},
		{"parent of another size: everything read", Source{Allocated: all, ChangesKnown: true, Changed: changed},
			&VolumeManifest{Size: size - cs, ChunkSize: cs, Chunks: parent.Chunks[:15]}, size, true},
		{"parent of another dedup domain: everything read", Source{Allocated: all, ChangesKnown: true, Changed: changed},
			otherParent, size, true},
		{"holes not read", Source{Allocated: []Range{{0, 8 * cs}}, ChangesKnown: true, Changed: changed}, parent, 3 * cs, true},
		{"unsorted changes refused", Source{Allocated: all, ChangesKnown: true, Changed: []Range{changed[1], changed[0]}}, parent, 0, false},
		{"allocated past the end refused", Source{Allocated: []Range{{0, size + 1}}}, parent, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.src
			src.Name, src.Data, src.Size = tt.name, &memDisk{b: now}, size
			b := r.NewBackup()
			defer b.Abort()
			vm, st, err := b.VolumeFrom(ctx, src, tt.parent, nil)
			if !tt.ok {
				if err == nil {
					t.Fatal("VolumeFrom accepted extents that break the contract")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.ReadBytes != tt.wantRead {
				t.Errorf("read %d bytes, want %d", st.ReadBytes, tt.wantRead)
			}
			if _, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}}); err != nil {
				t.Fatal(err)
			}
			out := &memDisk{b: bytes.Repeat([]byte{0xee}, size)}
			if err := r.RestoreVolumeTo(ctx, vm, out, "memory", nil); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.b, now) {
				t.Error("the restored volume differs from the source")
			}
		})
	}
}

// overlapDisk is a memDisk whose reads wait a moment (100 ms at most) for
// another read to be in flight, and that records how many were at once.
type overlapDisk struct {
	memDisk
	mu       sync.Mutex
	inflight int
	most     int
}

func (d *overlapDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	d.inflight++
	d.most = max(d.most, d.inflight)
	d.mu.Unlock()
	for deadline := time.Now().Add(100 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		d.mu.Lock()
		n := d.inflight
		d.mu.Unlock()
		if n >= 2 {
			break
		}
	}
	n, err := d.memDisk.ReadAt(p, off)
	d.mu.Lock()
	d.inflight--
	d.mu.Unlock()
	return n, err
}

// TestVolumeReadsOverlap: a backup keeps several reads of a volume in
// flight (a source that serves them in parallel, an NBD export over several
// connections or an SSD's queue, is kept busy), and the chunks read out of
// order still make an exact manifest.
func TestVolumeReadsOverlap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, _ := newRepo(t, testOpts)
	const cs = 64 << 10
	const size = 12 * cs
	data := randomBytes(rand.New(rand.NewPCG(3, 4)), size)
	d := &overlapDisk{memDisk: memDisk{b: data}}
	b := r.NewBackup()
	defer b.Abort()
	vm, _, err := b.VolumeFrom(ctx, Source{Name: "disk", Data: d, Size: size, Allocated: []Range{{0, size}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.most < 2 {
		t.Errorf("at most %d read in flight; want reads to overlap", d.most)
	}
	if _, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}}); err != nil {
		t.Fatal(err)
	}
	out := &memDisk{b: make([]byte, size)}
	if err := r.RestoreVolumeTo(ctx, vm, out, "memory", nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.b, data) {
		t.Error("the restore of chunks read out of order differs from the source")
	}
}
