package nbd

import "github.com/csbs/csbs/internal/repository"

// VolumeDisk is a Disk over a backup's disk read from its repository:
// block status tells the chunks that hold data from the holes and the
// all-zero chunks (StateHole|StateZero), so that clients skip them.
type VolumeDisk struct{ *repository.VolumeReader }

// Extents implements Disk.
func (d VolumeDisk) Extents(off, n int64) []Extent {
	var out []Extent
	for _, e := range d.VolumeReader.Extents(off, n) {
		flags := uint32(StateHole | StateZero)
		if e.Data {
			flags = 0
		}
		out = append(out, Extent{Off: e.Offset, Len: e.Length, Flags: flags})
	}
	return out
}
