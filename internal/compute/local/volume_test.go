package local

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/csbs/csbs/internal/compute"
)

// TestFileReaderContract: the local driver's snapshot volumes keep the
// compute contract: bytes as the file holds them, allocated extents that
// cover all data (holes left out where the file system tells), changes
// unknown with a reason.
func TestFileReaderContract(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const mib = 1 << 20
	for _, tt := range []struct {
		name   string
		size   int64
		writes []compute.Extent // filled with 'x'
	}{
		{"all hole", 4 * mib, nil},
		{"data at start", 4 * mib, []compute.Extent{{Off: 0, Len: mib}}},
		{"data in the middle and at the end", 8 * mib, []compute.Extent{{Off: 2 * mib, Len: mib}, {Off: 7 * mib, Len: mib}}},
		{"odd size", 3*mib + 123, []compute.Extent{{Off: 3 * mib, Len: 123}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := filepath.Join(dir, "disk.img")
			want := make([]byte, tt.size)
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(tt.size); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.writes {
				data := bytes.Repeat([]byte{'x'}, int(w.Len))
				copy(want[w.Off:], data)
				if _, err := f.WriteAt(data, w.Off); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			d, _ := newInventory(t, dir, Inventory{Servers: []ServerSpec{server("s1", "p1", VolumeSpec{ID: "v", Path: p})}})
			s, err := d.Server(ctx, "p1", "s1")
			if err != nil {
				t.Fatal(err)
			}
			snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "b1", Parent: &compute.Parent{BackupID: "b0"}})
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Release()
			sv := snap.Volumes[0]
			got := make([]byte, tt.size)
			if n, err := sv.Reader.ReadAt(got, 0); err != nil && !(err == io.EOF && n == len(got)) {
				t.Fatalf("ReadAt: %d, %v", n, err)
			}
			if !bytes.Equal(got, want) {
				t.Error("the reader's bytes differ from the file's")
			}
			if _, err := sv.Reader.ReadAt(make([]byte, 1), tt.size); err != io.EOF {
				t.Errorf("reading at the end: %v, want io.EOF", err)
			}
			alloc, err := sv.Reader.Allocated(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := compute.CheckExtents(alloc, tt.size); err != nil {
				t.Errorf("allocated extents %v break the contract: %v", alloc, err)
			}
			for _, w := range tt.writes {
				if !slices.ContainsFunc(alloc, func(e compute.Extent) bool { return e.Off <= w.Off && w.End() <= e.End() }) {
					t.Errorf("data at %v is outside the allocated extents %v", w, alloc)
				}
			}
			ch, err := sv.Reader.Changed(ctx)
			if err != nil || ch.Known || ch.Reason == "" {
				t.Errorf("Changed = %+v, %v; want unknown with a reason", ch, err)
			}
			if snap.Token != "" {
				t.Errorf("Token %q, want none: the local driver keeps nothing", snap.Token)
			}
		})
	}
}
