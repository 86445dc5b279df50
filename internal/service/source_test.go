package service

import (
	"context"
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/repository"
)

// answers is a compute.VolumeReader with given answers: the rules under
// test are about what the service does with them.
type answers struct {
	alloc []compute.Extent
	ch    compute.Changes
}

func (a answers) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }
func (a answers) Allocated(context.Context) ([]compute.Extent, error) {
	return a.alloc, nil
}
func (a answers) Changed(context.Context) (compute.Changes, error) { return a.ch, nil }

// TestSourceRules: changed extents are used only when the driver knows them,
// a parent exists and the disk kept its size; broken extents fail the
// backup instead of skipping data.
func TestSourceRules(t *testing.T) {
	const size = 1 << 20
	all := []compute.Extent{{Off: 0, Len: size}}
	known := compute.Changes{Known: true, Reason: "dirty bitmap", Extents: []compute.Extent{{Off: 4096, Len: 4096}}}
	parent := &repository.VolumeManifest{Size: size, ChunkSize: 1 << 16}
	for _, tt := range []struct {
		name      string
		r         answers
		parent    *repository.VolumeManifest
		wantKnown bool
		reason    string // prefix
		fails     bool
	}{
		{"known changes and a parent", answers{all, known}, parent, true, "changed extents only: dirty bitmap", false},
		{"unknown changes", answers{all, compute.NoChanges("raw disk")}, parent, false, "full read: raw disk", false},
		{"no parent", answers{all, known}, nil, false, "full read: no earlier backup", false},
		{"parent of another dedup domain", answers{all, known}, &repository.VolumeManifest{Size: size, ChunkSize: 1 << 16, Domain: "p2"}, false, "full read: the earlier backup is in another dedup domain", false},
		{"size changed", answers{all, known}, &repository.VolumeManifest{Size: size / 2, ChunkSize: 1 << 16}, false, "full read: the disk's size changed", false},
		{"allocated past the end", answers{[]compute.Extent{{Off: 0, Len: size + 1}}, known}, parent, false, "", true},
		{"changed extents overlap", answers{all, compute.Changes{Known: true, Extents: []compute.Extent{{Off: 0, Len: 10}, {Off: 5, Len: 10}}}}, parent, false, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sv := compute.SnapshotVolume{Volume: compute.Volume{ID: "v", Name: "disk"}, Size: size, Reader: tt.r}
			src, reason, err := source(context.Background(), sv, tt.parent, "")
			if tt.fails {
				if err == nil {
					t.Fatal("source accepted extents that break the contract")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if src.ChangesKnown != tt.wantKnown || !strings.HasPrefix(reason, tt.reason) {
				t.Errorf("ChangesKnown %v, reason %q; want %v, %q…", src.ChangesKnown, reason, tt.wantKnown, tt.reason)
			}
		})
	}
}
