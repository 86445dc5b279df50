package compute

import "fmt"

// CheckExtents enforces the shape the contract promises for allocated and
// changed extents of a volume of size bytes: each extent non-empty and
// inside the volume, sorted, not overlapping. Callers check what a driver
// hands them before trusting it to skip data.
func CheckExtents(ext []Extent, size int64) error {
	var end int64
	for i, e := range ext {
		switch {
		case e.Len <= 0 || e.Off < 0:
			return fmt.Errorf("extent %d (%d+%d) is empty or negative", i, e.Off, e.Len)
		case e.End() > size:
			return fmt.Errorf("extent %d (%d+%d) ends past the volume's %d bytes", i, e.Off, e.Len, size)
		case i > 0 && e.Off < end:
			return fmt.Errorf("extent %d (%d+%d) overlaps or precedes the one before", i, e.Off, e.Len)
		}
		end = e.End()
	}
	return nil
}

// AppendExtent adds e to ext (sorted, not overlapping, e starting at or
// after the last one's start), merging it with the last extent when they
// touch or overlap. Empty extents are dropped.
func AppendExtent(ext []Extent, e Extent) []Extent {
	if e.Len <= 0 {
		return ext
	}
	if n := len(ext); n > 0 && e.Off <= ext[n-1].End() {
		if e.End() > ext[n-1].End() {
			ext[n-1].Len = e.End() - ext[n-1].Off
		}
		return ext
	}
	return append(ext, e)
}
