package repository

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestVolumeReader reads a backed-up volume at random offsets and lengths,
// across chunk borders, holes and the end, and compares with the image.
func TestVolumeReader(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	img := filepath.Join(t.TempDir(), "disk.img")
	size := int64(40*cs + 777)
	writeImage(t, img, size, 3,
		region{kind: "text", off: 100, n: 3 * cs},
		region{kind: "random", off: 10*cs + 5, n: 6 * cs},
		region{kind: "zero", off: 20 * cs, n: 2 * cs},
		region{kind: "random", off: 40 * cs, n: 777})
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	_, vms, _ := backup(t, r, []string{img}, nil)
	v, err := r.OpenVolume(context.Background(), vms[0], 3)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.Size() != size {
		t.Fatalf("Size = %d, want %d", v.Size(), size)
	}

	tests := []struct {
		name    string
		off, n  int64
		wantEOF bool
	}{
		{"first byte", 0, 1, false},
		{"across a chunk border", cs - 10, 20, false},
		{"a hole", 30 * cs, cs, false},
		{"zeros written", 20 * cs, 2 * cs, false},
		{"the last bytes", size - 777, 777, false},
		{"past the end", size - 10, 20, true},
		{"all of it", 0, size, false},
	}
	for _, tc := range tests {
		p := make([]byte, tc.n)
		n, err := v.ReadAt(p, tc.off)
		end := min(tc.off+tc.n, size)
		if int64(n) != end-tc.off || (err == io.EOF) != tc.wantEOF || (err != nil && err != io.EOF) {
			t.Errorf("%s: ReadAt = %d, %v", tc.name, n, err)
		}
		if !bytes.Equal(p[:n], want[tc.off:end]) {
			t.Errorf("%s: bytes differ", tc.name)
		}
	}

	// Concurrent random reads through a cache of 3 chunks.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 200 {
				off := rng.Int64N(size)
				n := rng.Int64N(2*cs) + 1
				p := make([]byte, n)
				k, err := v.ReadAt(p, off)
				if err != nil && err != io.EOF {
					t.Errorf("ReadAt(%d, %d): %v", off, n, err)
					return
				}
				if !bytes.Equal(p[:k], want[off:off+int64(k)]) {
					t.Errorf("ReadAt(%d, %d): bytes differ", off, n)
					return
				}
			}
		})
	}
	wg.Wait()

	// Extents: data where chunks are stored, zeros elsewhere, covering the range.
	ext := v.Extents(0, size)
	var at int64
	for _, e := range ext {
		if e.Offset != at || e.Length <= 0 {
			t.Fatalf("extents %+v do not tile the volume", ext)
		}
		for off := e.Offset; off < e.Offset+e.Length; off += cs {
			if stored := !vms[0].Chunks[off/cs].IsZero(); stored != e.Data {
				t.Fatalf("extent %+v: chunk at %d stored=%v", e, off, stored)
			}
		}
		at += e.Length
	}
	if at != size || len(ext) < 3 {
		t.Errorf("extents %+v end at %d of %d", ext, at, size)
	}

	v.Close()
	if _, err := v.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrReaderClosed) {
		t.Errorf("read after Close: %v, want ErrReaderClosed", err)
	}
}

// TestVolumeReaderMissingChunk: a chunk the repository lacks refuses the
// open, naming the volume.
func TestVolumeReaderMissingChunk(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	img := filepath.Join(t.TempDir(), "disk.img")
	writeImage(t, img, 4*cs, 5, region{kind: "random", off: 0, n: 4 * cs})
	_, vms, _ := backup(t, r, []string{img}, nil)
	vm := *vms[0]
	vm.Chunks = append([]ChunkID(nil), vm.Chunks...)
	vm.Chunks[2][0] ^= 1
	if _, err := r.OpenVolume(context.Background(), &vm, 0); err == nil {
		t.Fatal("OpenVolume of a manifest naming a missing chunk succeeded")
	}
}

// TestVolumeReaderHoldsGC: the snapshot of an open reader is deleted and
// GC runs (both phases): the reader still reads every byte, because its
// lease holds GC back; once it is closed, GC removes the data.
func TestVolumeReaderHoldsGC(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	img := filepath.Join(t.TempDir(), "disk.img")
	writeImage(t, img, 8*cs, 9, region{kind: "random", off: 0, n: 8 * cs})
	want, _ := os.ReadFile(img)
	id, vms, _ := backup(t, r, []string{img}, nil)
	ctx := context.Background()
	v, err := r.OpenVolume(ctx, vms[0], 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteSnapshot(ctx, id); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := r.GC(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, len(want))
	if _, err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after the snapshot was deleted and GC ran: %v (equal %v)", err, bytes.Equal(got, want))
	}
	v.Close()
	for range 2 {
		if _, err := r.GC(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.OpenVolume(ctx, vms[0], 0); err == nil {
		t.Fatal("the data of a deleted snapshot is still there after the reader closed and GC ran")
	}
}

// TestRestoreMissingChunkLeavesTarget: a restore of a manifest naming a
// chunk the repository lacks fails before it writes: the target keeps its
// bytes (csbs repo restore used to truncate it first).
func TestRestoreMissingChunkLeavesTarget(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	img := filepath.Join(t.TempDir(), "disk.img")
	writeImage(t, img, 4*cs, 5, region{kind: "random", off: 0, n: 4 * cs})
	_, vms, _ := backup(t, r, []string{img}, nil)
	vm := *vms[0]
	vm.Chunks = append([]ChunkID(nil), vm.Chunks...)
	vm.Chunks[3][0] ^= 1
	target := filepath.Join(t.TempDir(), "target.img")
	old := bytes.Repeat([]byte("precious"), 1000)
	os.WriteFile(target, old, 0o600)
	if err := restore(t, r, &vm, target); err == nil {
		t.Fatal("restore with a missing chunk succeeded")
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, old) {
		t.Fatalf("the target was changed by a restore that could not finish (%d bytes now)", len(got))
	}
}

// TestPacksHaveNoZeroPadding: the padding after each sealed blob is
// random, so a pack shows nobody where a blob ends (zeros there revealed
// each chunk's compressed length to whoever holds the storage).
func TestPacksHaveNoZeroPadding(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	img := filepath.Join(t.TempDir(), "disk.img")
	// Text compresses to lengths that are not multiples of the alignment.
	writeImage(t, img, 16*cs, 3, region{kind: "text", off: 0, n: 16 * cs})
	backup(t, r, []string{img}, nil)
	packs, _ := filepath.Glob(filepath.Join(dir, "data", "*", "*"))
	if len(packs) == 0 {
		t.Fatal("no pack written")
	}
	for _, p := range packs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, make([]byte, 32)); i >= 0 {
			t.Errorf("pack %s has a run of 32 zero bytes at %d (of %d): blob padding shows", filepath.Base(p), i, len(b))
		}
	}
}

func TestTrailerBoundsCap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		l      uint32
		size   int64
		wantOK bool
	}{
		{"a small trailer", 200, 1 << 20, true},
		{"the largest a pack can need", maxTrailerLen, 2 << 30, true},
		{"larger than any pack needs, in a huge listed pack", maxTrailerLen + 1, 4 << 30, false},
		{"longer than the pack", 1 << 20, 1 << 10, false},
	} {
		tail := binary.LittleEndian.AppendUint32(nil, tc.l)
		_, n, err := trailerBounds(tail, tc.size)
		if (err == nil) != tc.wantOK || (err == nil && n != int(tc.l)) {
			t.Errorf("%s: trailerBounds = %d, %v", tc.name, n, err)
		}
	}
}

// TestDedupDomains: the same disk backed up in two dedup domains gets
// other chunk ids and is stored twice (nothing shows one domain what the
// other stores); in one domain it is stored once. Each restores, verify
// re-hashes every chunk in its domain, and a parent of another domain is
// never reused.
func TestDedupDomains(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "disk.img")
	writeImage(t, img, 8*cs, 4, region{kind: "random", off: 0, n: 8 * cs})
	want, _ := os.ReadFile(img)
	backupIn := func(domain string, parent *VolumeManifest) (*VolumeManifest, VolumeStats) {
		t.Helper()
		b := r.NewBackupIn(domain)
		defer b.Abort()
		vm, st, err := b.Volume(ctx, img, 8*cs, parent, nil)
		if err != nil {
			t.Fatal(err)
		}
		vm.VolumeID = "disk"
		if _, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}}); err != nil {
			t.Fatal(err)
		}
		return vm, st
	}
	a, stA := backupIn("project-a", nil)
	b, stB := backupIn("project-b", nil)
	a2, stA2 := backupIn("project-a", nil)
	if a.Domain != "project-a" || a.Chunks[0] == b.Chunks[0] {
		t.Fatalf("the same chunk has the same id in two domains (domain %q)", a.Domain)
	}
	if stB.NewBytes != stA.NewBytes || stB.NewBytes == 0 {
		t.Errorf("the second domain stored %d new bytes, the first %d: want the same (no dedup across domains)", stB.NewBytes, stA.NewBytes)
	}
	if stA2.NewBytes != 0 || a2.Chunks[0] != a.Chunks[0] {
		t.Errorf("a second backup in the same domain stored %d new bytes, want 0", stA2.NewBytes)
	}
	// A parent of another domain is not reused: its ids would not verify.
	c, _ := backupIn("project-c", a)
	if c.Chunks[0] == a.Chunks[0] {
		t.Errorf("a manifest of domain project-c took ids of project-a from its parent")
	}
	for _, vm := range []*VolumeManifest{a, b, c} {
		out := filepath.Join(t.TempDir(), "out.img")
		if err := restore(t, r, vm, out); err != nil {
			t.Fatalf("restore %s: %v", vm.Domain, err)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
			t.Errorf("restore of domain %s differs", vm.Domain)
		}
	}
	rep, err := r.Verify(ctx)
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
	// A manifest claiming another domain fails to restore rather than
	// deliver bytes whose ids were not re-hashed in their domain.
	bad := *a
	bad.Domain = "project-b"
	if err := restore(t, r, &bad, filepath.Join(t.TempDir(), "bad.img")); err == nil {
		t.Error("a manifest with the wrong domain restored")
	}
}
