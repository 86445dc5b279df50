package compute

import (
	"slices"
	"testing"
)

func TestCheckExtents(t *testing.T) {
	for _, tt := range []struct {
		name string
		ext  []Extent
		size int64
		ok   bool
	}{
		{"none", nil, 100, true},
		{"whole volume", []Extent{{0, 100}}, 100, true},
		{"sorted gaps", []Extent{{0, 10}, {20, 10}, {90, 10}}, 100, true},
		{"touching", []Extent{{0, 10}, {10, 10}}, 100, true},
		{"past the end", []Extent{{90, 11}}, 100, false},
		{"empty", []Extent{{10, 0}}, 100, false},
		{"negative offset", []Extent{{-1, 5}}, 100, false},
		{"overlapping", []Extent{{0, 20}, {10, 20}}, 100, false},
		{"unsorted", []Extent{{50, 10}, {0, 10}}, 100, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckExtents(tt.ext, tt.size)
			if (err == nil) != tt.ok {
				t.Errorf("CheckExtents(%v, %d) = %v, want ok %v", tt.ext, tt.size, err, tt.ok)
			}
		})
	}
}

func TestAppendExtent(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []Extent
		add  Extent
		want []Extent
	}{
		{"to nothing", nil, Extent{5, 5}, []Extent{{5, 5}}},
		{"after a gap", []Extent{{0, 5}}, Extent{10, 5}, []Extent{{0, 5}, {10, 5}}},
		{"touching merges", []Extent{{0, 5}}, Extent{5, 5}, []Extent{{0, 10}}},
		{"overlapping merges", []Extent{{0, 8}}, Extent{5, 5}, []Extent{{0, 10}}},
		{"inside is absorbed", []Extent{{0, 20}}, Extent{5, 5}, []Extent{{0, 20}}},
		{"empty is dropped", []Extent{{0, 5}}, Extent{9, 0}, []Extent{{0, 5}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendExtent(slices.Clone(tt.in), tt.add)
			if !slices.Equal(got, tt.want) {
				t.Errorf("AppendExtent(%v, %v) = %v, want %v", tt.in, tt.add, got, tt.want)
			}
			if err := CheckExtents(got, 100); err != nil {
				t.Errorf("result breaks the contract: %v", err)
			}
		})
	}
}
