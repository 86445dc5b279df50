package repository

import (
	"context"
	"fmt"
	"strings"
)

// CheckVolume returns an error naming the first chunk of vm that the
// repository's index does not hold, or nil when every chunk is there. It
// reads no pack: damage inside a pack shows only when a restore or Verify
// reads the chunk. Callers use it to refuse a restore before they touch
// the target. It first loads the index files it has not seen, so a backup
// made by another process is found.
func (r *Repository) CheckVolume(ctx context.Context, vm *VolumeManifest) error {
	if err := vm.check(); err != nil {
		return err
	}
	if err := r.refresh(ctx); err != nil {
		return fmt.Errorf("volume %q: %w", vm.VolumeID, err)
	}
	if err := r.missingChunk(vm); err != nil {
		return fmt.Errorf("volume %q: %w", vm.VolumeID, err)
	}
	return nil
}

// missingChunk returns an *UnrestorableError naming every chunk of vm the
// index (as loaded) cannot read, or nil. Restores call it before they
// touch the target.
func (r *Repository) missingChunk(vm *VolumeManifest) error {
	var e *UnrestorableError
	for i, id := range vm.Chunks {
		if id.IsZero() || r.idx.has(id) {
			continue
		}
		if e == nil {
			e = &UnrestorableError{VolumeID: vm.VolumeID, ChunkSize: vm.ChunkSize, First: id}
		}
		e.Offsets = append(e.Offsets, int64(i)*int64(vm.ChunkSize))
		if r.idx.quarantined(id) {
			e.Damaged++
		}
	}
	if e == nil {
		return nil
	}
	return e
}

// UnrestorableError says which chunks of a volume the repository cannot
// restore: damaged (their copies quarantined) or missing. A restore that
// returns it wrote nothing.
type UnrestorableError struct {
	VolumeID  string
	ChunkSize int
	Offsets   []int64 // of each chunk that cannot be restored, in the volume
	Damaged   int     // how many of them are damaged (the others are missing)
	First     ChunkID // the first of them
}

func (e *UnrestorableError) Error() string {
	what := "missing from the repository (run verify)"
	switch {
	case e.Damaged == len(e.Offsets):
		what = "damaged (quarantined; a new backup of the data stores it again)"
	case e.Damaged > 0:
		what = fmt.Sprintf("damaged or missing (%d damaged)", e.Damaged)
	}
	if len(e.Offsets) == 1 {
		return fmt.Sprintf("chunk %v at offset %d is %s", e.First, e.Offsets[0], what)
	}
	return fmt.Sprintf("%d chunks of %d bytes at offsets %s are %s (the first is %v)", len(e.Offsets), e.ChunkSize, FormatOffsets(e.Offsets, 10), what, e.First)
}

// FormatOffsets lists offsets, at most max of them, then how many more.
func FormatOffsets(offs []int64, max int) string {
	var b strings.Builder
	for i, o := range offs {
		if i == max {
			fmt.Fprintf(&b, " and %d more", len(offs)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d", o)
	}
	return b.String()
}

// begin registers an operation of kind (a lease) and loads the index files
// not seen yet. release ends the lease.
func (r *Repository) begin(ctx context.Context, kind string) (release func(), err error) {
	l, err := r.acquireLease(ctx, kind)
	if err != nil {
		return nil, err
	}
	if err := r.refresh(ctx); err != nil {
		l.release()
		return nil, err
	}
	return l.release, nil
}
