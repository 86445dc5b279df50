package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testOpts keep tests fast: small chunks and packs (so a few MiB make many
// of both) and a cheap KDF.
// A GC margin of a nanosecond lets one GC call remove what it marks.
var testOpts = Options{ChunkSize: 64 << 10, PackSize: 1 << 20, Workers: 2, KDFTime: 1, KDFMemoryKiB: 64,
	LeaseTTL: 5 * time.Second, GCMargin: time.Nanosecond}

var password = []byte("correct horse battery staple")

func newRepo(t testing.TB, opts Options) (*Repository, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := Init(dir, password, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, dir
}

func reopen(t testing.TB, r *Repository, dir string, opts Options) *Repository {
	t.Helper()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(dir, password, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	return r2
}

// region is a piece of a test image.
type region struct {
	kind string // "hole", "zero", "text", "random", "copy" (of the region at src)
	off  int64
	n    int64
	src  int64 // for "copy"
}

var words = strings.Fields("the quick brown fox jumps over a lazy dog while server disks are backed up " +
	"into packs of chunks compressed encrypted and deduplicated restore verify snapshot volume")

// writeImage creates a sparse file of size bytes made of regions (anything
// not covered is a hole).
func writeImage(t testing.TB, path string, size int64, seed uint64, regions ...region) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for _, rg := range regions {
		var b []byte
		switch rg.kind {
		case "hole":
			continue
		case "zero":
			b = make([]byte, rg.n)
		case "text":
			b = textBytes(rng, rg.n)
		case "random":
			b = randomBytes(rng, rg.n)
		case "copy":
			b = make([]byte, rg.n)
			if _, err := f.ReadAt(b, rg.src); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.WriteAt(b, rg.off); err != nil {
			t.Fatal(err)
		}
	}
}

// randomBytes returns n bytes from rng: incompressible data.
func randomBytes(rng *rand.Rand, n int64) []byte {
	b := make([]byte, n)
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && i+k < len(b); k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func textBytes(rng *rand.Rand, n int64) []byte {
	var buf bytes.Buffer
	for int64(buf.Len()) < n {
		buf.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(12) == 0 {
			buf.WriteString(".\n")
		} else {
			buf.WriteByte(' ')
		}
	}
	return buf.Bytes()[:n]
}

func fileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

func backup(t testing.TB, r *Repository, paths []string, parents []*VolumeManifest) (string, []*VolumeManifest, []VolumeStats) {
	t.Helper()
	ctx := context.Background()
	b := r.NewBackup()
	defer b.Abort()
	snap := &Snapshot{Meta: map[string]string{"server": "web-1"}}
	var vms []*VolumeManifest
	var sts []VolumeStats
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		var parent *VolumeManifest
		if parents != nil {
			parent = parents[i]
		}
		vm, st, err := b.Volume(ctx, p, fi.Size(), parent, nil)
		if err != nil {
			t.Fatal(err)
		}
		vm.VolumeID = filepath.Base(p)
		vms = append(vms, vm)
		sts = append(sts, st)
		snap.Volumes = append(snap.Volumes, *vm)
	}
	id, err := b.Commit(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	return id, vms, sts
}

func restore(t testing.TB, r *Repository, vm *VolumeManifest, path string) error {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return r.RestoreVolume(context.Background(), vm, f, nil)
}

const cs = 64 << 10

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		size    int64
		regions []region
	}{
		{"empty", 0, nil},
		{"all hole", 10 * cs, nil},
		{"zeros written", 5 * cs, []region{{kind: "zero", off: 0, n: 5 * cs}}},
		{"text", 7*cs + 123, []region{{kind: "text", off: 0, n: 7*cs + 123}}},
		{"random", 9 * cs, []region{{kind: "random", off: 0, n: 9 * cs}}},
		{"one byte", 1, []region{{kind: "random", off: 0, n: 1}}},
		{"mixed unaligned", 40*cs + 777, []region{
			{kind: "text", off: 100, n: 3 * cs},
			{kind: "random", off: 10*cs + 5, n: 6 * cs},
			{kind: "zero", off: 20 * cs, n: 2 * cs},
			{kind: "copy", off: 25 * cs, n: 4 * cs, src: 10 * cs},
			{kind: "random", off: 40 * cs, n: 777},
		}},
		{"data in the middle of a chunk", 4 * cs, []region{{kind: "random", off: cs + 10, n: 20}}},
	}
	r, dir := newRepo(t, testOpts)
	tmp := t.TempDir()
	var paths []string
	var sums [][32]byte
	for i, tc := range tests {
		p := filepath.Join(tmp, strings.ReplaceAll(tc.name, " ", "_"))
		writeImage(t, p, tc.size, uint64(i), tc.regions...)
		paths = append(paths, p)
		sums = append(sums, fileSum(t, p))
	}
	id, vms, sts := backup(t, r, paths, nil)
	for i, tc := range tests {
		st := sts[i]
		if st.Size != tc.size || st.ChangedBytes != st.UsedBytes || st.UsedBytes > tc.size {
			t.Errorf("%s: stats %+v", tc.name, st)
		}
	}
	// Restore from a freshly opened repository: nothing but the directory
	// and the password.
	r = reopen(t, r, dir, testOpts)
	s, err := r.LoadSnapshot(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if s.Meta["server"] != "web-1" || len(s.Volumes) != len(tests) {
		t.Fatalf("snapshot = %+v", s)
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !equalChunks(s.Volumes[i].Chunks, vms[i].Chunks) {
				t.Fatal("loaded manifest differs from the one returned by Volume")
			}
			out := filepath.Join(tmp, "restored")
			// Pre-existing content must not survive the restore; a larger
			// target keeps its size and the bytes beyond the volume.
			if err := os.WriteFile(out, bytes.Repeat([]byte{0xAA}, int(tc.size)+5000), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := restore(t, r, &s.Volumes[i], out); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(out)
			if int64(len(got)) != tc.size+5000 || !bytes.Equal(got[tc.size:], bytes.Repeat([]byte{0xAA}, 5000)) {
				t.Fatal("the target's bytes beyond the volume were changed")
			}
			if err := os.Truncate(out, tc.size); err != nil {
				t.Fatal(err)
			}
			if fileSum(t, out) != sums[i] {
				t.Fatal("restored volume differs from the original")
			}
		})
	}
}

func equalChunks(a, b []ChunkID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSparseAndZeroChunksNotStored(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 100*cs, 1,
		region{kind: "zero", off: 0, n: 10 * cs},
		region{kind: "random", off: 50 * cs, n: cs})
	_, vms, sts := backup(t, r, []string{p}, nil)
	if sts[0].Chunks != 1 || sts[0].NewChunks != 1 || sts[0].UsedBytes != cs {
		t.Fatalf("stats %+v, want one chunk", sts[0])
	}
	for i, c := range vms[0].Chunks {
		if (i == 50) == c.IsZero() {
			t.Fatalf("chunk %d zero = %v", i, c.IsZero())
		}
	}
}

func TestDedupAndChangedBytes(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	tmp := t.TempDir()
	a := filepath.Join(tmp, "a")
	writeImage(t, a, 64*cs, 7,
		region{kind: "random", off: 0, n: 32 * cs},
		region{kind: "text", off: 32 * cs, n: 32 * cs})
	_, vms1, st1 := backup(t, r, []string{a}, nil)
	size1, _ := r.Size(context.Background())

	// The same data again adds no chunk.
	_, vms2, st2 := backup(t, r, []string{a}, vms1)
	if st2[0].NewChunks != 0 || st2[0].NewBytes != 0 || st2[0].StoredBytes != 0 || st2[0].ChangedBytes != 0 {
		t.Fatalf("second backup stats %+v, want nothing new", st2[0])
	}
	if size2, _ := r.Size(context.Background()); size2-size1 > 16<<10 {
		t.Fatalf("second backup grew the repository by %d bytes", size2-size1)
	}

	// Rewrite 3 chunks: exactly those are new and changed.
	f, err := os.OpenFile(a, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int64{0, 33, 63} {
		if _, err := f.WriteAt([]byte("changed!"), i*cs+100); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	_, _, st3 := backup(t, r, []string{a}, vms2)
	if st3[0].NewChunks != 3 || st3[0].ChangedBytes != 3*cs || st3[0].UsedBytes != 64*cs {
		t.Fatalf("third backup stats %+v, want 3 new chunks", st3[0])
	}
	if st1[0].StoredBytes >= st1[0].NewBytes {
		t.Errorf("half-text volume did not compress: %+v", st1[0])
	}
}

func TestConcurrentBackupsShareChunks(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 48*cs, 3, region{kind: "random", off: 0, n: 48 * cs})
	var wg sync.WaitGroup
	stats := make([]VolumeStats, 4)
	for i := range stats {
		wg.Go(func() {
			_, _, sts := backup(t, r, []string{p}, nil)
			stats[i] = sts[0]
		})
	}
	wg.Wait()
	total := 0
	for _, st := range stats {
		total += st.NewChunks
	}
	if total != 48 {
		t.Fatalf("4 concurrent backups of 48 chunks stored %d chunks, want 48", total)
	}
	snaps, err := r.Snapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 4 {
		t.Fatalf("%d snapshots", len(snaps))
	}
	out := filepath.Join(t.TempDir(), "out")
	for _, s := range snaps {
		if err := restore(t, r, &s.Volumes[0], out); err != nil {
			t.Fatal(err)
		}
		if fileSum(t, out) != fileSum(t, p) {
			t.Fatal("restore differs")
		}
	}
}

func TestWrongPassword(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	r.Close()
	if _, err := Open(dir, []byte("wrong"), testOpts); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("Open with wrong password: %v, want ErrWrongPassword", err)
	}
	if _, err := Init(dir, password, testOpts); !errors.Is(err, ErrExists) {
		t.Fatalf("Init over a repository: %v, want ErrExists", err)
	}
	if _, err := Open(t.TempDir(), password, testOpts); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of an empty dir: %v, want ErrNotFound", err)
	}
}

// TestNoPlaintextInFiles checks that neither data nor metadata is readable
// from the files: a marker in the volume, the snapshot meta and volume ids
// appear in no file, and compression cannot hide the marker since the chunks
// are encrypted after it.
func TestNoPlaintextInFiles(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	marker := []byte("SECRET-MARKER-3141592653")
	p := filepath.Join(t.TempDir(), "volume-id-marker")
	writeImage(t, p, 4*cs, 1, region{kind: "random", off: 0, n: 4 * cs})
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat(marker, 100), 1000)
	f.Close()
	b := r.NewBackup()
	vm, _, err := b.Volume(context.Background(), p, 4*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	vm.VolumeID = "volume-id-marker"
	if _, err := b.Commit(context.Background(), &Snapshot{Meta: map[string]string{"name": "meta-marker"}, Volumes: []VolumeManifest{*vm}}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	files := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, _ := os.ReadFile(path)
		for _, m := range [][]byte{marker, []byte("meta-marker"), []byte("volume-id-marker"), vm.Chunks[0][:]} {
			if bytes.Contains(b, m) {
				t.Errorf("%s contains %q in plaintext", path, m)
			}
		}
		return nil
	})
	if files < 5 {
		t.Fatalf("only %d files in the repository", files)
	}
}

func TestDeleteAndGC(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	writeImage(t, a, 40*cs, 1, region{kind: "random", off: 0, n: 40 * cs})
	writeImage(t, b, 40*cs, 2, region{kind: "random", off: 0, n: 20 * cs}, region{kind: "copy", off: 20 * cs, n: 20 * cs, src: 0})
	// b shares nothing with a except by chance; c shares half of b.
	c := filepath.Join(tmp, "c")
	writeImage(t, c, 40*cs, 3, region{kind: "copy", off: 0, n: 20 * cs, src: 0}, region{kind: "random", off: 20 * cs, n: 20 * cs})
	cp(t, b, c, 20*cs)
	ida, _, _ := backup(t, r, []string{a}, nil)
	idb, _, _ := backup(t, r, []string{b}, nil)
	idc, _, _ := backup(t, r, []string{c}, nil)
	ctx := context.Background()
	full, _ := r.Size(ctx)

	if err := r.DeleteSnapshot(ctx, ida); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteSnapshot(ctx, ida); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if err := r.DeleteSnapshot(ctx, idb); err != nil {
		t.Fatal(err)
	}
	st, err := r.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := r.Size(ctx)
	if st.PacksDeleted == 0 || st.BytesFreed <= 0 || after >= full {
		t.Fatalf("GC %+v: size %d -> %d", st, full, after)
	}
	// a was 40 random chunks of 64 KiB: GC must free at least most of that.
	if st.BytesFreed < 30*cs {
		t.Errorf("GC freed %d bytes, want at least %d", st.BytesFreed, 30*cs)
	}
	// c still restores, also after reopening (GC's index changes persist).
	for _, rr := range []*Repository{r, reopen(t, r, dir, testOpts)} {
		s, err := rr.LoadSnapshot(ctx, idc)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(tmp, "out")
		if err := restore(t, rr, &s.Volumes[0], out); err != nil {
			t.Fatal(err)
		}
		if fileSum(t, out) != fileSum(t, c) {
			t.Fatal("restore after GC differs")
		}
		rep, err := rr.Verify(ctx)
		if err != nil || !rep.OK() {
			t.Fatalf("verify after GC: %v %+v", err, rep)
		}
		r = rr
	}
	// Everything deleted: GC leaves (almost) nothing.
	r.DeleteSnapshot(ctx, idc)
	if _, err := r.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Size(ctx); n > 8192 {
		t.Fatalf("empty repository still holds %d bytes", n)
	}
}

// cp copies the first n bytes of src over dst.
func cp(t testing.TB, src, dst string, n int64) {
	b := make([]byte, n)
	f, _ := os.Open(src)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g, _ := os.OpenFile(dst, os.O_RDWR, 0)
	g.WriteAt(b, 0)
	g.Close()
}

func TestGCRepacksPartlyUsedPacks(t *testing.T) {
	opts := testOpts
	opts.PackSize = 64 << 20 // everything in one pack
	r, _ := newRepo(t, opts)
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	writeImage(t, a, 30*cs, 1, region{kind: "random", off: 0, n: 30 * cs})
	writeImage(t, b, 10*cs, 2, region{kind: "random", off: 0, n: 10 * cs})
	ctx := context.Background()
	bk := r.NewBackup()
	va, _, err := bk.Volume(ctx, a, 30*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	vb, _, err := bk.Volume(ctx, b, 10*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bk.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*va}}); err != nil {
		t.Fatal(err)
	}
	idb, err := bkCommit(r, vb)
	if err != nil {
		t.Fatal(err)
	}
	snaps, _ := r.Snapshots(ctx)
	r.DeleteSnapshot(ctx, snaps[0].ID)
	if snaps[0].ID == idb {
		t.Fatal("wrong snapshot order")
	}
	st, err := r.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksRewritten != 1 {
		t.Fatalf("GC %+v, want one pack rewritten", st)
	}
	s, _ := r.LoadSnapshot(ctx, idb)
	out := filepath.Join(tmp, "out")
	if err := restore(t, r, &s.Volumes[0], out); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != fileSum(t, b) {
		t.Fatal("restore after repack differs")
	}
}

// bkCommit writes a snapshot of an already stored volume in a new backup.
func bkCommit(r *Repository, vms ...*VolumeManifest) (string, error) {
	b := r.NewBackup()
	defer b.Abort()
	s := &Snapshot{Time: time.Now().Add(time.Second)}
	for _, vm := range vms {
		s.Volumes = append(s.Volumes, *vm)
	}
	return b.Commit(context.Background(), s)
}

// TestGCDuringBackup: a GC that runs while a backup has stored (but not
// committed) chunks does not wait for it, and removes none of them.
func TestGCDuringBackup(t *testing.T) {
	t.Parallel()
	r, _ := newRepo(t, testOpts)
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 20*cs, 5, region{kind: "random", off: 0, n: 20 * cs})
	ctx := context.Background()
	b := r.NewBackup()
	vm, _, err := b.Volume(ctx, p, 20*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		st, err := r.GC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.PacksDeleted != 0 {
			t.Fatalf("GC deleted %d packs of a running backup", st.PacksDeleted)
		}
	}
	id, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := r.GC(ctx); err != nil || st.PacksDeleted != 0 {
		t.Fatalf("GC after the commit: %+v %v", st, err)
	}
	s, _ := r.LoadSnapshot(ctx, id)
	out := filepath.Join(t.TempDir(), "out")
	if err := restore(t, r, &s.Volumes[0], out); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != fileSum(t, p) {
		t.Fatal("restore differs")
	}
}

func TestAbortedBackupIsGarbage(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 30*cs, 9, region{kind: "random", off: 0, n: 30 * cs})
	ctx := context.Background()
	b := r.NewBackup()
	if _, _, err := b.Volume(ctx, p, 30*cs, nil, nil); err != nil {
		t.Fatal(err)
	}
	b.Abort()
	b.Abort()
	if _, err := b.Commit(ctx, &Snapshot{}); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	// A crash: the pack writer's temp file and a pack without index, as if
	// the process died between the two.
	r = reopen(t, r, dir, testOpts)
	if snaps, err := r.Snapshots(ctx); err != nil || len(snaps) != 0 {
		t.Fatalf("snapshots after abort: %v %v", snaps, err)
	}
	idx, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	if len(idx) == 0 {
		t.Fatal("no index files")
	}
	os.Remove(idx[0])
	stale := filepath.Join(dir, "tmp", "tmp-crashed")
	os.WriteFile(stale, make([]byte, 1000), 0o600)
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)

	r = reopen(t, r, dir, testOpts)
	if _, err := r.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Size(ctx); n > 8192 {
		t.Fatalf("repository holds %d bytes after GC of garbage", n)
	}
	// The repository still works.
	backup(t, r, []string{p}, nil)
}

// TestGCRecoversLostIndex: a pack whose index file is gone but whose chunks a
// snapshot needs is re-indexed from its trailer, not deleted.
func TestGCRecoversLostIndex(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 30*cs, 9, region{kind: "random", off: 0, n: 30 * cs})
	id, _, _ := backup(t, r, []string{p}, nil)
	idx, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	for _, f := range idx {
		os.Remove(f)
	}
	r = reopen(t, r, dir, testOpts)
	ctx := context.Background()
	if _, err := r.GC(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := r.LoadSnapshot(ctx, id)
	out := filepath.Join(t.TempDir(), "out")
	if err := restore(t, r, &s.Volumes[0], out); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != fileSum(t, p) {
		t.Fatal("restore differs")
	}
}

func TestDamagedPack(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	writeImage(t, a, 10*cs, 1, region{kind: "random", off: 0, n: 10 * cs})
	writeImage(t, b, 10*cs, 2, region{kind: "text", off: 0, n: 10 * cs})
	ida, vma, _ := backup(t, r, []string{a}, nil)
	idb, _, _ := backup(t, r, []string{b}, nil)
	ctx := context.Background()

	// Flip a byte inside chunk 3 of a.
	loc, pack, ok := r.idx.lookup(vma[0].Chunks[3])
	if !ok {
		t.Fatal("chunk not indexed")
	}
	pf := filepath.Join(dir, "data", pack.String()[:2], pack.String())
	f, err := os.OpenFile(pf, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	f.ReadAt(one[:], int64(loc.offset)+100)
	one[0] ^= 0x40
	f.WriteAt(one[:], int64(loc.offset)+100)
	f.Close()

	rep, err := r.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.AffectedSnapshots) != 1 || rep.AffectedSnapshots[0] != ida ||
		len(rep.DamagedChunks) != 1 || rep.DamagedChunks[0] != vma[0].Chunks[3] {
		t.Fatalf("verify report %+v, want snapshot %s affected by one chunk", rep, ida)
	}
	if len(rep.DamagedPacks) != 1 || rep.DamagedPacks[0] != pack.String() {
		t.Fatalf("damaged packs %v", rep.DamagedPacks)
	}
	for _, id := range rep.AffectedSnapshots {
		if id == idb {
			t.Fatal("undamaged snapshot reported")
		}
	}

	// Restore fails naming the chunk, and the damaged chunk's range holds
	// no data (never unauthenticated bytes).
	out := filepath.Join(tmp, "out")
	err = restore(t, r, vma[0], out)
	if err == nil || !strings.Contains(err.Error(), vma[0].Chunks[3].String()) || !strings.Contains(err.Error(), "offset 196608") {
		t.Fatalf("restore of a damaged chunk: %v", err)
	}
	got, _ := os.ReadFile(out)
	if int64(len(got)) >= 4*cs && !bytes.Equal(got[3*cs:4*cs], make([]byte, cs)) {
		t.Fatal("restore wrote the damaged chunk")
	}
}

func TestRestoreToBlockDeviceZeroes(t *testing.T) {
	// Without a block device here, check zeroRange's fallback: written zeros.
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, bytes.Repeat([]byte{1}, 3<<20), 0o600)
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer f.Close()
	if err := zeroRange(f, 1000, 2<<20); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	for i, c := range got {
		want := byte(1)
		if i >= 1000 && i < 1000+2<<20 {
			want = 0
		}
		if c != want {
			t.Fatalf("byte %d = %d, want %d", i, c, want)
		}
	}
}

func TestProgress(t *testing.T) {
	opts := testOpts
	opts.ChunkSize = 4 << 20
	r, _ := newRepo(t, opts)
	p := filepath.Join(t.TempDir(), "img")
	size := int64(200 << 20)
	writeImage(t, p, size, 1, region{kind: "text", off: 0, n: 20 << 20}, region{kind: "random", off: 150 << 20, n: 8 << 20})
	var calls []int64
	b := r.NewBackup()
	defer b.Abort()
	_, _, err := b.Volume(context.Background(), p, size, nil, func(done int64) { calls = append(calls, done) })
	if err != nil {
		t.Fatal(err)
	}
	// Data up to 20 MiB, then a hole up to 150 MiB: the hole is reported
	// in one step, then the rest at the end.
	if len(calls) < 2 || calls[len(calls)-1] != size {
		t.Fatalf("progress calls %v", calls)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i] < calls[i-1] {
			t.Fatalf("progress calls %v", calls)
		}
	}
}

func TestVolumeErrorsNamePath(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	b := r.NewBackup()
	defer b.Abort()
	p := filepath.Join(t.TempDir(), "short")
	os.WriteFile(p, make([]byte, 100), 0o600)
	for _, tc := range []struct {
		path string
		size int64
	}{{"/nonexistent/disk", 10}, {p, 10 * cs}} {
		_, _, err := b.Volume(context.Background(), tc.path, tc.size, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("Volume(%s): %v, want an error naming the path", tc.path, err)
		}
	}
}

func TestCommitWithGivenID(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 4*cs, 1, region{kind: "random", off: 0, n: 4 * cs})
	const id = "0123456789abcdef0123456789abcdef"
	for i := range 2 { // the second Commit (a re-run) replaces the first
		b := r.NewBackup()
		vm, _, err := b.Volume(ctx, p, 4*cs, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.Commit(ctx, &Snapshot{ID: id, Meta: map[string]string{"run": string(rune('0' + i))}, Volumes: []VolumeManifest{*vm}})
		if err != nil || got != id {
			t.Fatalf("Commit = %q, %v; want %q", got, err, id)
		}
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil || len(snaps) != 1 || snaps[0].ID != id || snaps[0].Meta["run"] != "1" {
		t.Fatalf("snapshots = %v, %v; want the second run only", snaps, err)
	}
	for _, bad := range []string{"../x", "ABCD", "a"} {
		b := r.NewBackup()
		if _, err := b.Commit(ctx, &Snapshot{ID: bad}); err == nil {
			t.Errorf("Commit with id %q succeeded", bad)
		}
		b.Abort()
	}
	if _, err := r.LoadSnapshot(ctx, "00ff00ff"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadSnapshot of a missing id: %v", err)
	}
}

// TestSnapshotTooLarge: a snapshot whose manifest is larger than a
// snapshot may be read back with is refused by Commit, and nothing is
// written: a backup must fail rather than be committed unreadable.
func TestSnapshotTooLarge(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 64*cs, 1, region{kind: "random", off: 0, n: 64 * cs})
	b := r.NewBackup()
	defer b.Abort()
	vm, _, err := b.Volume(ctx, p, 64*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := maxSnapshotSize
	maxSnapshotSize = 2048 // 64 chunk ids take some 4 KiB of JSON
	t.Cleanup(func() { maxSnapshotSize = old })
	if _, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}}); err == nil || !strings.Contains(err.Error(), "more than the 2048") {
		t.Fatalf("Commit of a snapshot over the limit: %v, want a refusal naming the limit", err)
	}
	if snaps, err := r.Snapshots(ctx); err != nil || len(snaps) != 0 {
		t.Fatalf("snapshots after the refusal: %v, %v; want none", snaps, err)
	}
	maxSnapshotSize = old
	if _, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}}); err != nil {
		t.Fatalf("Commit within the limit after a refusal: %v", err)
	}
}

// TestDamagedSnapshot: a snapshot file that fails authentication is named by
// Verify, and GC refuses to run (it cannot know which chunks it needs).
func TestDamagedSnapshot(t *testing.T) {
	r, dir := newRepo(t, testOpts)
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 8*cs, 1, region{kind: "random", off: 0, n: 8 * cs})
	good, _, _ := backup(t, r, []string{p}, nil)
	bad, _, _ := backup(t, r, []string{p}, nil)
	ctx := context.Background()
	rep, err := r.Verify(ctx)
	if err != nil || !rep.OK() || rep.Snapshots != 2 || rep.Chunks != 8 || rep.Packs == 0 {
		t.Fatalf("verify of a healthy repository: %v %+v", err, rep)
	}
	f := filepath.Join(dir, "snapshots", bad)
	b, _ := os.ReadFile(f)
	b[len(b)/2] ^= 1
	os.WriteFile(f, b, 0o600)

	rep, err = r.Verify(ctx)
	if err != nil || rep.OK() || len(rep.AffectedSnapshots) != 1 || rep.AffectedSnapshots[0] != bad {
		t.Fatalf("verify: %v %+v, want snapshot %s affected", err, rep, bad)
	}
	if _, err := r.LoadSnapshot(ctx, bad); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadSnapshot of a damaged snapshot: %v", err)
	}
	if _, err := r.GC(ctx); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("GC with a damaged snapshot: %v, want a refusal naming it", err)
	}
	if _, err := r.LoadSnapshot(ctx, good); err != nil {
		t.Fatal(err)
	}
}

// TestBufferedFallback runs a repository and a restore on tmpfs, which has
// no O_DIRECT: packs and restored files are then written buffered.
func TestBufferedFallback(t *testing.T) {
	d, err := os.MkdirTemp("/dev/shm", "repo")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(d)
	r, err := Init(filepath.Join(d, "r"), password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := filepath.Join(d, "img")
	writeImage(t, p, 20*cs+5, 1, region{kind: "random", off: 0, n: 10 * cs}, region{kind: "text", off: 12 * cs, n: 8*cs + 5})
	_, vms, _ := backup(t, r, []string{p}, nil)
	out := filepath.Join(d, "out")
	if err := restore(t, r, vms[0], out); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, out) != fileSum(t, p) {
		t.Fatal("restored volume differs")
	}
	rep, err := r.Verify(t.Context())
	if err != nil || !rep.OK() {
		t.Fatal(err, rep)
	}
}
