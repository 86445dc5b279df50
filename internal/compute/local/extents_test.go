package local

import (
	"reflect"
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/compute"
)

// TestChangedExtents: the rule of the extent comparison, one case per
// shape of block map.
func TestChangedExtents(t *testing.T) {
	const k = 4096
	x := func(log, phys, n int64, flags uint32) physExtent {
		return physExtent{Logical: log * k, Physical: phys * k, Len: n * k, Flags: flags}
	}
	e := func(off, n int64) compute.Extent { return compute.Extent{Off: off * k, Len: n * k} }
	tests := []struct {
		name     string
		old, cur []physExtent
		size     int64 // in blocks
		want     []compute.Extent
		err      string
	}{
		{name: "identical maps", old: []physExtent{x(0, 100, 16, extentShared)}, cur: []physExtent{x(0, 100, 16, extentShared)}, size: 16},
		{name: "both holes", size: 16},
		{name: "one block rewritten", old: []physExtent{x(0, 100, 16, 0)},
			cur:  []physExtent{x(0, 100, 5, 0), x(5, 900, 1, 0), x(6, 106, 10, extentLast)},
			size: 16, want: []compute.Extent{e(5, 1)}},
		{name: "maps split differently but same blocks", old: []physExtent{x(0, 100, 16, 0)},
			cur: []physExtent{x(0, 100, 7, 0), x(7, 107, 9, 0)}, size: 16},
		{name: "same length, shifted physical", old: []physExtent{x(0, 100, 4, 0)}, cur: []physExtent{x(0, 101, 4, 0)},
			size: 4, want: []compute.Extent{e(0, 4)}},
		{name: "hole punched", old: []physExtent{x(0, 100, 16, 0)}, cur: []physExtent{x(0, 100, 4, 0), x(8, 108, 8, 0)},
			size: 16, want: []compute.Extent{e(4, 4)}},
		{name: "hole filled", old: []physExtent{x(0, 100, 4, 0)}, cur: []physExtent{x(0, 100, 4, 0), x(10, 500, 2, 0)},
			size: 16, want: []compute.Extent{e(10, 2)}},
		{name: "adjacent changes merge", old: []physExtent{x(0, 100, 8, 0)},
			cur: []physExtent{x(0, 300, 2, 0), x(2, 400, 2, 0), x(4, 104, 4, 0)}, size: 8, want: []compute.Extent{e(0, 4)}},
		{name: "unwritten turned written at the same address", old: []physExtent{x(0, 100, 4, extentUnwritten)},
			cur: []physExtent{x(0, 100, 4, 0)}, size: 4, want: []compute.Extent{e(0, 4)}},
		{name: "extents past the size are cut", old: []physExtent{x(0, 100, 32, 0)}, cur: []physExtent{x(0, 100, 2, 0), x(2, 700, 30, 0)},
			size: 4, want: []compute.Extent{e(2, 2)}},
		{name: "delalloc", old: []physExtent{x(0, 100, 4, 0)}, cur: []physExtent{x(0, 0, 4, extentDelalloc|extentUnknown)}, size: 4, err: "delalloc"},
		{name: "encoded", old: []physExtent{x(0, 100, 4, extentEncoded)}, cur: []physExtent{x(0, 100, 4, 0)}, size: 4, err: "encoded"},
		{name: "inline", old: []physExtent{x(0, 100, 1, extentDataInline|extentNotAligned)}, cur: []physExtent{x(0, 100, 1, 0)}, size: 1, err: "inline"},
		{name: "unknown", old: []physExtent{x(0, 100, 1, 0)}, cur: []physExtent{x(0, 100, 1, extentUnknown)}, size: 1, err: "unknown"},
		{name: "merged", old: []physExtent{x(0, 100, 1, 0)}, cur: []physExtent{x(0, 100, 1, extentMerged)}, size: 1, err: "merged"},
		{name: "no physical address", old: []physExtent{x(0, 0, 1, 0)}, cur: []physExtent{x(0, 0, 1, 0)}, size: 1, err: "no physical address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := changedExtents(tc.old, tc.cur, tc.size*k)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("changed = %v, want %v", got, tc.want)
			}
			if err := compute.CheckExtents(got, tc.size*k); err != nil {
				t.Error(err)
			}
		})
	}
}
