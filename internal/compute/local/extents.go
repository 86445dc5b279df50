package local

import (
	"fmt"

	"github.com/csbs/csbs/internal/compute"
)

// changedExtents compares the block maps of two reflink clones of one file
// of size bytes, taken at two instants, and returns the byte ranges where
// their contents may differ: sorted, not overlapping, inside [0, size).
//
// A byte is unchanged when it is a hole in both maps, or when both map it
// to the same physical byte with the same written/unwritten state: a block
// shared by two clones is never written in place (a write to any file that
// shares it copies it first), so the same address holds the same data in
// both. Everything else counts as changed. The caller must have checked
// that neither clone was written since it was made.
//
// An error says why the maps cannot be compared (an extent without a
// trustworthy physical address, see unsafeFlags); the caller reads all.
func changedExtents(old, cur []physExtent, size int64) ([]compute.Extent, error) {
	for _, m := range []struct {
		name string
		ext  []physExtent
	}{{"kept clone", old}, {"new clone", cur}} {
		for _, e := range m.ext {
			if f := e.Flags & unsafeFlags; f != 0 {
				return nil, fmt.Errorf("the %s's extent at byte %d has FIEMAP flags %#x (%s): its physical address cannot be compared",
					m.name, e.Logical, f, flagNames(f))
			}
			if e.Physical == 0 {
				return nil, fmt.Errorf("the %s's extent at byte %d has no physical address", m.name, e.Logical)
			}
		}
	}
	var out []compute.Extent
	i, j := 0, 0
	for pos := int64(0); pos < size; {
		for i < len(old) && old[i].end() <= pos {
			i++
		}
		for j < len(cur) && cur[j].end() <= pos {
			j++
		}
		// The segment [pos, next) lies inside one extent or one hole of
		// each map.
		next := size
		om := i < len(old) && old[i].Logical <= pos
		cm := j < len(cur) && cur[j].Logical <= pos
		if i < len(old) {
			next = min(next, boundary(old[i], pos))
		}
		if j < len(cur) {
			next = min(next, boundary(cur[j], pos))
		}
		same := !om && !cm
		if om && cm {
			o, c := old[i], cur[j]
			same = o.Physical+(pos-o.Logical) == c.Physical+(pos-c.Logical) &&
				o.Flags&extentUnwritten == c.Flags&extentUnwritten
		}
		if !same {
			out = compute.AppendExtent(out, compute.Extent{Off: pos, Len: next - pos})
		}
		pos = next
	}
	return out, nil
}

// boundary is where the state of e changes after pos: its end when pos is
// inside it, its start when it lies ahead.
func boundary(e physExtent, pos int64) int64 {
	if e.Logical <= pos {
		return e.end()
	}
	return e.Logical
}

// flagNames names the FIEMAP flags in f, for messages.
func flagNames(f uint32) string {
	names := []struct {
		bit  uint32
		name string
	}{
		{extentUnknown, "unknown"}, {extentDelalloc, "delalloc"}, {extentEncoded, "encoded"},
		{extentDataEncrypted, "encrypted"}, {extentNotAligned, "not aligned"}, {extentDataInline, "inline"},
		{extentDataTail, "tail"}, {extentUnwritten, "unwritten"}, {extentMerged, "merged"}, {extentShared, "shared"},
	}
	s := ""
	for _, n := range names {
		if f&n.bit != 0 {
			if s != "" {
				s += ", "
			}
			s += n.name
		}
	}
	return s
}
