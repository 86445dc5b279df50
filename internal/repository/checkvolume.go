package repository

import "fmt"

// CheckVolume returns an error naming the first chunk of vm that the
// repository's index does not hold, or nil when every chunk is there. It
// reads no pack: damage inside a pack shows only when a restore or Verify
// reads the chunk. Callers use it to refuse a restore before they touch
// the target.
func (r *Repository) CheckVolume(vm *VolumeManifest) error {
	if err := vm.check(); err != nil {
		return err
	}
	for i, id := range vm.Chunks {
		if !id.IsZero() && !r.idx.has(id) {
			return fmt.Errorf("volume %q: chunk %v at offset %d is missing from the repository (run verify)",
				vm.VolumeID, id, int64(i)*int64(vm.ChunkSize))
		}
	}
	return nil
}
