package repository

import (
	"context"
	"fmt"
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

// missingChunk names the first chunk of vm the index (as loaded) does not
// hold, or returns nil. Restores call it before they touch the target.
func (r *Repository) missingChunk(vm *VolumeManifest) error {
	for i, id := range vm.Chunks {
		if !id.IsZero() && !r.idx.has(id) {
			return fmt.Errorf("chunk %v at offset %d is missing from the repository (run verify)", id, int64(i)*int64(vm.ChunkSize))
		}
	}
	return nil
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
