package repository

import (
	"context"
	"fmt"
	"io"
)

// Range is the byte range [Off, Off+Len) of a volume.
type Range struct {
	Off, Len int64
}

// Source is a volume read through an io.ReaderAt rather than a path (a
// disk exported by QEMU, a snapshot clone), with what its platform knows
// of its allocation and its changes.
type Source struct {
	Name string      // for errors: a path, a disk name
	Data io.ReaderAt // guest-visible bytes
	Size int64
	// Allocated are the extents that may hold non-zero bytes, sorted and
	// not overlapping; every byte outside them is zero and is not read.
	Allocated []Range
	// ChangesKnown says Changed covers every byte that may differ from the
	// parent manifest's copy of the volume. Chunks outside Changed are
	// then taken from the parent without being read.
	ChangesKnown bool
	Changed      []Range
}

// VolumeFrom backs up src like Volume backs up a file: it stores the chunks
// the repository lacks and returns the complete manifest (every backup
// restores alone) and what it cost. Holes (outside src.Allocated) are not
// read. When src.ChangesKnown and parent is this volume's manifest in the
// backup the changes are counted from (same size, chunk size and dedup
// domain), a chunk
// that no changed extent touches is taken from parent unread
// (VolumeStats.ReusedBytes); otherwise every allocated chunk is read.
// Extents must be sorted, not overlapping and inside the volume: anything
// else is refused before a byte is read.
func (b *Backup) VolumeFrom(ctx context.Context, src Source, parent *VolumeManifest, progress func(done int64)) (*VolumeManifest, VolumeStats, error) {
	if err := b.usable(ctx); err != nil {
		return nil, VolumeStats{}, err
	}
	if src.Size < 0 {
		return nil, VolumeStats{}, fmt.Errorf("backup volume %s: negative size %d", src.Name, src.Size)
	}
	if err := checkExtents(src.Allocated, src.Size); err != nil {
		return nil, VolumeStats{}, fmt.Errorf("backup volume %s: allocated %w", src.Name, err)
	}
	cs := int64(b.r.cfg.ChunkSize)
	var reuse func(i int64) (ChunkID, bool)
	// Only a parent of the same chunking, size and dedup domain has chunk
	// ids this backup may reuse.
	if src.ChangesKnown && parent != nil && parent.ChunkSize == int(cs) && parent.Size == src.Size && parent.Domain == b.domain {
		if err := checkExtents(src.Changed, src.Size); err != nil {
			return nil, VolumeStats{}, fmt.Errorf("backup volume %s: changed %w", src.Name, err)
		}
		changed := make([]bool, len(parent.Chunks))
		for _, e := range src.Changed {
			for i := e.Off / cs; i <= (e.Off+e.Len-1)/cs; i++ {
				changed[i] = true
			}
		}
		reuse = func(i int64) (ChunkID, bool) { return parent.Chunks[i], !changed[i] }
	}
	extents := func(fn func(start, end int64) error) error {
		for _, e := range src.Allocated {
			if err := fn(e.Off, e.Off+e.Len); err != nil {
				return err
			}
		}
		return nil
	}
	return b.volume(ctx, src.Name, src.Data, src.Size, extents, reuse, parent, progress)
}

// keep records chunk i (n bytes) as id, taken from the parent unread.
func (v *volume) keep(i int64, id ChunkID, n int) {
	v.vm.Chunks[i] = id
	if !id.IsZero() {
		v.used.Add(int64(n))
		v.chunks.Add(1)
	}
	v.reused.Add(int64(n))
	v.advance(int64(n))
}

func checkExtents(ext []Range, size int64) error {
	var end int64
	for i, e := range ext {
		if e.Len <= 0 || e.Off < 0 || e.Off+e.Len > size || (i > 0 && e.Off < end) {
			return fmt.Errorf("extent %d (%d+%d) is empty, outside the %d bytes of the volume, or out of order", i, e.Off, e.Len, size)
		}
		end = e.Off + e.Len
	}
	return nil
}
