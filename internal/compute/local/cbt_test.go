package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/compute/local/xfstest"
	"github.com/csbs/csbs/internal/repository"
)

// cbtChunk is the chunk size of the test repository: small, so that writes
// inside one chunk and across chunk borders are both cheap to make.
const cbtChunk = 64 << 10

// cbt is one volume backed up into a real repository through the driver,
// the way the service does it (source in internal/service).
type cbt struct {
	t    *testing.T
	d    *Driver
	repo *repository.Repository
	img  string
	n    int

	parent *compute.Parent
	pvm    *repository.VolumeManifest
}

func newCBT(t *testing.T, opts ...Option) *cbt {
	t.Helper()
	mnt := xfstest.Mount(t)
	img := filepath.Join(mnt, "disk.img")
	writeRandom(t, img, 8<<20)
	path := filepath.Join(t.TempDir(), "servers.yaml")
	if err := WriteInventory(path, Inventory{Servers: []ServerSpec{server("s1", "p1", VolumeSpec{ID: "v1", Name: "disk", Path: img})}}); err != nil {
		t.Fatal(err)
	}
	d, err := New(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := repository.Init(filepath.Join(t.TempDir(), "repo"), []byte("pw"),
		repository.Options{ChunkSize: cbtChunk, PackSize: 1 << 20, Workers: 2, KDFTime: 1, KDFMemoryKiB: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	return &cbt{t: t, d: d, repo: repo, img: img}
}

// result is what one backup did.
type result struct {
	changes compute.Changes
	stats   repository.VolumeStats
	token   string
}

// backup takes a backup of the volume, incremental from the last one
// committed, and commits it (and its snapshot) unless commit is false.
func (c *cbt) backup(commit bool) result {
	t := c.t
	t.Helper()
	ctx := context.Background()
	c.n++
	id := hex.EncodeToString([]byte{byte(c.n)}) + strings.Repeat("0", 30)
	s, err := c.d.Server(ctx, "p1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := c.d.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: id, Parent: c.parent})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if !strings.HasPrefix(snap.Method, "reflink") {
		t.Fatalf("snapshot method %s, want reflink", snap.Method)
	}
	sv := snap.Volumes[0]
	alloc, err := sv.Reader.Allocated(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sv.Reader.Changed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := compute.CheckExtents(ch.Extents, sv.Size); ch.Known && err != nil {
		t.Fatal(err)
	}
	src := repository.Source{Name: sv.Volume.Name, Data: sv.Reader, Size: sv.Size}
	for _, e := range alloc {
		src.Allocated = append(src.Allocated, repository.Range{Off: e.Off, Len: e.Len})
	}
	if ch.Known && c.pvm != nil && c.pvm.Size == sv.Size {
		src.ChangesKnown = true
		for _, e := range ch.Extents {
			src.Changed = append(src.Changed, repository.Range{Off: e.Off, Len: e.Len})
		}
	}
	b := c.repo.NewBackup()
	defer b.Abort()
	vm, st, err := b.VolumeFrom(ctx, src, c.pvm, nil)
	if err != nil {
		t.Fatal(err)
	}
	vm.VolumeID = "v1"
	if !commit {
		return result{changes: ch, stats: st, token: snap.Token}
	}
	if _, err := b.Commit(ctx, &repository.Snapshot{ID: id, Time: time.Now(), Volumes: []repository.VolumeManifest{*vm}}); err != nil {
		t.Fatal(err)
	}
	if err := snap.Commit(); err != nil {
		t.Fatal(err)
	}
	c.parent = &compute.Parent{BackupID: id, Token: snap.Token}
	c.pvm = vm
	c.checkRestore()
	return result{changes: ch, stats: st, token: snap.Token}
}

// checkRestore restores the last backup and compares it with the image
// byte for byte (the image is not written while the test restores).
func (c *cbt) checkRestore() {
	t := c.t
	t.Helper()
	dst, err := os.Create(filepath.Join(t.TempDir(), "restored.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := c.repo.RestoreVolume(context.Background(), c.pvm, dst, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst.Name())
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(c.img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the restore of backup %s differs from the disk (%d vs %d bytes)", c.parent.BackupID, len(got), len(want))
	}
}

func (c *cbt) write(off int64, n int) {
	c.t.Helper()
	f, err := os.OpenFile(c.img, os.O_WRONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, n)
	rand.Read(p)
	if _, err := f.WriteAt(p, off); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cbt) punch(off, n int64) {
	c.t.Helper()
	f, err := os.OpenFile(c.img, os.O_WRONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cbt) truncate(size int64) {
	c.t.Helper()
	if err := os.Truncate(c.img, size); err != nil {
		c.t.Fatal(err)
	}
}

// TestExtentComparisonRestoresExactly backs a disk up on a real reflink XFS
// after writes of every shape: each incremental made by extent comparison
// reads no more than the chunks the writes touched, and its restore equals
// the disk byte for byte. A size change reads all.
func TestExtentComparisonRestoresExactly(t *testing.T) {
	c := newCBT(t)
	first := c.backup(true)
	if first.changes.Known || !strings.Contains(first.changes.Reason, "no earlier backup") {
		t.Fatalf("first backup: changes %+v, want unknown: no earlier backup", first.changes)
	}
	const ck = cbtChunk
	steps := []struct {
		name   string
		change func()
		// maxRead is the most the backup may read when it compares
		// extents; -1: the comparison must be refused (full read).
		maxRead int64
		reason  string
	}{
		{"nothing changed", func() {}, 0, ""},
		{"4 KiB inside one chunk", func() { c.write(5*ck+8192, 4096) }, ck, ""},
		{"across a chunk border", func() { c.write(10*ck-4096, 8192) }, 2 * ck, ""},
		{"many small writes", func() {
			for i := range int64(20) {
				c.write(i*6*ck+4096*(i%5), 4096)
			}
		}, 20 * ck, ""},
		{"a hole punched", func() { c.punch(20*ck, 3*ck) }, 3 * ck, ""},
		{"a hole punched inside a chunk and a write beside it", func() { c.punch(40*ck+4096, 8192); c.write(41*ck, 4096) }, 2 * ck, ""},
		{"the file extended", func() { c.truncate(8<<20 + ck); c.write(8<<20, 4096) }, -1, "size changed"},
		{"a write after the extension", func() { c.write(3*ck, 4096) }, ck, ""},
		{"the file truncated", func() { c.truncate(6 << 20) }, -1, "size changed"},
		{"a rewrite of everything", func() { c.write(0, 6<<20) }, 6 << 20, ""},
	}
	for _, s := range steps {
		s.change()
		r := c.backup(true) // checks the restore
		if s.maxRead < 0 {
			if r.changes.Known || !strings.Contains(r.changes.Reason, s.reason) {
				t.Errorf("%s: changes %+v, want a full read because %s", s.name, r.changes, s.reason)
			}
			continue
		}
		if !r.changes.Known || !strings.HasPrefix(r.changes.Reason, "extent comparison with the kept reflink clone") {
			t.Errorf("%s: changes %+v, want known by extent comparison", s.name, r.changes)
			continue
		}
		if r.stats.ReadBytes > s.maxRead {
			t.Errorf("%s: read %d bytes, want at most %d (changed extents %v)", s.name, r.stats.ReadBytes, s.maxRead, r.changes.Extents)
		}
	}
}

// TestExtentComparisonFallbacks: every case where comparing extents would
// be unsafe reads the whole disk and says why.
func TestExtentComparisonFallbacks(t *testing.T) {
	tests := []struct {
		name   string
		opts   []Option
		before func(c *cbt) // after a committed backup, before the next
		reason string
	}{
		{name: "clones not kept", opts: []Option{WithKeepClones(false)}, reason: "keep_clones is off"},
		{name: "kept clone removed", before: func(c *cbt) {
			img, _ := keptPaths(c.img, "v1")
			os.Remove(img)
		}, reason: "cannot be opened"},
		{name: "record removed", before: func(c *cbt) {
			_, rec := keptPaths(c.img, "v1")
			os.Remove(rec)
		}, reason: "no kept clone"},
		{name: "kept clone written", before: func(c *cbt) {
			img, _ := keptPaths(c.img, "v1")
			f, err := os.OpenFile(img, os.O_WRONLY, 0)
			if err != nil {
				c.t.Fatal(err)
			}
			f.WriteAt([]byte("x"), 100)
			f.Close()
		}, reason: "modified or replaced"},
		{name: "kept clone touched", before: func(c *cbt) {
			img, _ := keptPaths(c.img, "v1")
			os.Chmod(img, 0o644)
		}, reason: "modified or replaced"},
		{name: "parent token of another backup", before: func(c *cbt) {
			c.parent = &compute.Parent{BackupID: c.parent.BackupID, Token: tokenPrefix + "other"}
		}, reason: "not of the earlier backup"},
		{name: "last backup not committed", before: func(c *cbt) {
			c.write(0, 4096)
			c.backup(false) // its clone must not replace the kept one
			c.parent = &compute.Parent{BackupID: "uncommitted", Token: tokenPrefix + "uncommitted"}
		}, reason: "not of the earlier backup"},
		{name: "image replaced by a copy", before: func(c *cbt) {
			data, err := os.ReadFile(c.img)
			if err != nil {
				c.t.Fatal(err)
			}
			if err := os.WriteFile(c.img+".new", data, 0o644); err != nil {
				c.t.Fatal(err)
			}
			if err := os.Rename(c.img+".new", c.img); err != nil {
				c.t.Fatal(err)
			}
		}, reason: "another file"},
		{name: "disk on another file system", before: func(c *cbt) {
			// The same path on another file system (a mount over the
			// images' directory, say) shows only in the device number.
			c.editRecord(func(r *keptRecord) { r.SourceDev++ })
		}, reason: "another file"},
		{name: "kept clone's extents unreadable", before: func(c *cbt) {
			img, _ := keptPaths(c.img, "v1")
			c.failFiemap(func(f *os.File) bool { return f.Name() == img })
		}, reason: "the kept clone's extents cannot be read"},
		{name: "new clone's extents unreadable", before: func(c *cbt) {
			img, _ := keptPaths(c.img, "v1")
			c.failFiemap(func(f *os.File) bool { return f.Name() != img })
		}, reason: "the new clone's extents cannot be read"},
		{name: "size changed", before: func(c *cbt) { c.truncate(4 << 20) }, reason: "size changed"},
		{name: "no parent", before: func(c *cbt) { c.parent = nil }, reason: "no earlier backup"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCBT(t, tc.opts...)
			first := c.backup(true)
			if len(tc.opts) > 0 && first.token != "" {
				t.Errorf("token %q with clones not kept, want none", first.token)
			}
			if tc.before != nil {
				tc.before(c)
			}
			r := c.backup(true)
			if r.changes.Known || !strings.Contains(r.changes.Reason, tc.reason) {
				t.Fatalf("changes %+v, want a full read because %q", r.changes, tc.reason)
			}
			if r.stats.ReadBytes < 4<<20 {
				t.Errorf("read %d bytes, want the whole disk", r.stats.ReadBytes)
			}
			if len(tc.opts) > 0 {
				if _, err := os.Stat(filepath.Join(filepath.Dir(c.img), KeptDirName)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("clones not kept, but %s exists (%v)", KeptDirName, err)
				}
			}
		})
	}
}

// editRecord rewrites the kept clone's record through edit.
func (c *cbt) editRecord(edit func(r *keptRecord)) {
	c.t.Helper()
	_, path := keptPaths(c.img, "v1")
	rec, err := readRecord(path)
	if err != nil {
		c.t.Fatal(err)
	}
	edit(&rec)
	data, err := json.Marshal(rec)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// failFiemap makes every FIEMAP of a clone for which fail is true fail
// with EIO until the test ends.
func (c *cbt) failFiemap(fail func(f *os.File) bool) {
	testHookFiemap = func(f *os.File) error {
		if fail(f) {
			return unix.EIO
		}
		return nil
	}
	c.t.Cleanup(func() { testHookFiemap = nil })
}

// TestKeptClonesCost: a kept clone costs nothing while the disk shares its
// blocks and what the disk rewrote since; DropKept and the clean-up of
// volumes gone from the inventory remove it.
func TestKeptClonesCost(t *testing.T) {
	ctx := context.Background()
	c := newCBT(t)
	c.backup(true)
	img, rec := keptPaths(c.img, "v1")
	measured := func() []compute.KeptClone {
		t.Helper()
		ks, err := c.d.KeptClones(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ks {
			if err := c.d.MeasureKept(ctx, &ks[i]); err != nil {
				t.Fatal(err)
			}
		}
		return ks
	}
	ks := measured()
	if len(ks) != 1 || ks[0].ApparentBytes != 8<<20 || ks[0].ExclusiveBytes > 64<<10 {
		t.Fatalf("after one backup: %+v, want 1 clone of 8 MiB holding (almost) nothing alone", ks)
	}
	if k := ks[0]; k.Path != img || k.ServerID != "s1" || k.VolumeID != "v1" || k.BackupID == "" || k.Source != c.img || k.KeptAt.IsZero() {
		t.Errorf("kept clone %+v, want of s1/v1 at %s, from %s, with its backup and time", k, img, c.img)
	}
	c.write(0, 1<<20)
	unix.Sync()
	if ks = measured(); len(ks) != 1 || ks[0].ExclusiveBytes < 1<<20 {
		t.Errorf("after 1 MiB rewritten: %+v, want at least 1 MiB held by the clone alone", ks)
	}
	// A clone whose extents cannot be read is counted as all its own:
	// the space dropping it might free is never understated.
	c.failFiemap(func(*os.File) bool { return true })
	if ks = measured(); len(ks) != 1 || ks[0].ExclusiveBytes != 8<<20 {
		t.Errorf("extents unreadable: %+v, want the whole 8 MiB counted as the clone's own", ks)
	}
	testHookFiemap = nil

	// A young clone of a volume still in the inventory survives the
	// clean-up, and so does an old one.
	if n, err := c.d.removeOrphanClones(time.Now().Add(time.Hour)); n != 0 || err != nil {
		t.Fatalf("clean-up removed %d (%v), want the valid clone kept", n, err)
	}
	if err := c.d.DropKept(ctx, compute.KeptClone{Path: c.img}); err == nil {
		t.Errorf("DropKept of the disk image itself did not refuse")
	}
	if err := c.d.DropKept(ctx, ks[0]); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{img, rec, filepath.Dir(img), c.img} {
		if _, err := os.Stat(p); p != c.img && !errors.Is(err, fs.ErrNotExist) || p == c.img && err != nil {
			t.Errorf("after DropKept %s: %v", p, err)
		}
	}
	if r := c.backup(true); r.changes.Known || !strings.Contains(r.changes.Reason, "no kept clone") {
		t.Errorf("after the drop: changes %+v, want a full read for want of a kept clone", r.changes)
	}

	// A volume removed from the inventory: its clone goes once it is
	// older than staleAge.
	if err := WriteInventory(c.d.Path(), Inventory{Servers: []ServerSpec{server("s2", "p1", VolumeSpec{ID: "other", Path: filepath.Join(t.TempDir(), "x.img")})}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.d.removeOrphanClones(time.Now()); n != 0 {
		t.Errorf("clean-up removed %d clones younger than %s", n, staleAge)
	}
	if n, err := c.d.removeOrphanClones(time.Now().Add(2 * staleAge)); n != 1 || err != nil {
		t.Errorf("clean-up removed %d (%v), want the clone of the removed volume", n, err)
	}
	if _, err := os.Stat(img); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the clone of a removed volume is still there (%v)", err)
	}
}

// TestKeptCloneOfVolumeRemovedWhileDown: a volume removed from the
// inventory while csbs is down, alone in its directory, is named by no
// inventory the restarted driver reads; its kept clone is still found
// (the directory was written down in the state directory) and removed.
func TestKeptCloneOfVolumeRemovedWhileDown(t *testing.T) {
	state := filepath.Join(t.TempDir(), "kept-clones")
	c := newCBT(t, WithStateDir(state))
	c.backup(true)
	img, _ := keptPaths(c.img, "v1")
	if _, err := os.Stat(img); err != nil {
		t.Fatalf("no kept clone: %v", err)
	}
	// Down: the volume leaves the inventory; then a new process starts.
	if err := WriteInventory(c.d.Path(), Inventory{Servers: []ServerSpec{server("s2", "p1", VolumeSpec{ID: "other", Path: filepath.Join(t.TempDir(), "x.img")})}}); err != nil {
		t.Fatal(err)
	}
	d, err := New(c.d.Path(), WithStateDir(state))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := d.KeptClones(context.Background())
	if err != nil || len(ks) != 1 || ks[0].Path != img {
		t.Fatalf("restarted driver lists %+v (%v), want the clone at %s", ks, err, img)
	}
	if n, err := d.removeOrphanClones(time.Now().Add(2 * staleAge)); n != 1 || err != nil {
		t.Errorf("clean-up after the restart removed %d (%v), want the clone of the removed volume", n, err)
	}
	if _, err := os.Stat(filepath.Dir(img)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the kept-clone directory of a removed volume is still there (%v)", err)
	}
	// The directory is gone: once its entry is old it is no longer looked in.
	d.removeOrphanClones(time.Now().Add(2 * staleAge))
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("state directory still names %d directories after theirs went", len(ents))
	}
}
