package repository

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/faulty"
	"github.com/csbs/csbs/internal/repository/blob/local"
	"github.com/csbs/csbs/internal/repository/blob/s3"
	"github.com/csbs/csbs/internal/repository/blob/s3/s3test"
)

// The tests of this file reproduce races between processes sharing one
// repository (issue 11), on a local directory and on S3 (versitygw). Two
// Repository values on one repository stand for two processes; where a
// process must die at an exact point, the test binary runs itself as a child
// that kills itself with SIGKILL.

// place is a repository the race tests open several times.
type place struct {
	backend string // "local" or "s3"
	where   string // the directory, or the JSON of the s3.Config
	opts    Options
}

// newPlace makes an empty repository on backend.
func newPlace(t *testing.T, backend string) place {
	t.Helper()
	if backend == "local" {
		_, dir := newRepo(t, testOpts)
		return place{backend, dir, testOpts}
	}
	srv := s3test.Start(t)
	cfg := srv.Config(srv.NewBucket(t), "race")
	be, err := s3.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := InitBackend(context.Background(), be, password, s3Opts)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	b, _ := json.Marshal(cfg)
	return place{backend, string(b), s3Opts}
}

func (p place) backendOf() (blob.Backend, error) {
	if p.backend == "local" {
		return local.Open(p.where)
	}
	var cfg s3.Config
	if err := json.Unmarshal([]byte(p.where), &cfg); err != nil {
		return nil, err
	}
	return s3.Open(context.Background(), cfg)
}

// open opens the repository through a fault-injecting backend.
func (p place) open(t testing.TB) (*Repository, *faulty.Backend) {
	t.Helper()
	be, err := p.backendOf()
	if err != nil {
		t.Fatal(err)
	}
	fb := faulty.Wrap(be)
	r, err := OpenBackend(context.Background(), fb, password, p.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, fb
}

// settle waits until what was just written is older than the GC margin
// (GC marks only such packs; S3 times are whole seconds).
func (p place) settle() {
	if p.backend != "local" {
		time.Sleep(p.opts.GCMargin + time.Second)
	}
}

// onBackends runs test on a local directory and on S3.
func onBackends(t *testing.T, test func(t *testing.T, p place)) {
	t.Parallel()
	for _, backend := range []string{"local", "s3"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			test(t, newPlace(t, backend))
		})
	}
}

// openTwice returns two Repository values on one new local repository, as
// two processes would have.
func openTwice(t *testing.T) (a, b *Repository) {
	t.Helper()
	a, dir := newRepo(t, testOpts)
	return a, openAgain(t, dir)
}

// openFaulty opens the local repository in dir through a fault-injecting
// backend.
func openFaulty(t testing.TB, dir string) (*Repository, *faulty.Backend) {
	t.Helper()
	return place{"local", dir, testOpts}.open(t)
}

// gcUntilError runs GC until it fails (at most 4 times: a collection may
// need more than one run to delete garbage) and returns the error.
func gcUntilError(ctx context.Context, r *Repository) error {
	for range 4 {
		if _, err := r.GC(ctx); err != nil {
			return err
		}
	}
	return nil
}

// checkRestores restores vm with r and compares it with the image at p.
func checkRestores(t *testing.T, r *Repository, vm *VolumeManifest, p, who string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	if err := restore(t, r, vm, out); err != nil {
		t.Fatalf("%s: restore of a committed backup: %v", who, err)
	}
	if fileSum(t, out) != fileSum(t, p) {
		t.Fatalf("%s: restored bytes differ", who)
	}
}

// TestRaceGCFailsPartWay (race 1): a GC whose pack removal fails part-way
// must leave its own process's index consistent: the next backup of the
// same data must not deduplicate against packs the GC deleted.
func TestRaceGCFailsPartWay(t *testing.T) {
	onBackends(t, func(t *testing.T, pl place) {
		r, fb := pl.open(t)
		ctx := context.Background()
		p := filepath.Join(t.TempDir(), "img")
		writeImage(t, p, 60*cs, 21, region{kind: "random", off: 0, n: 60 * cs})
		first, _, _ := backup(t, r, []string{p}, nil)
		if err := r.DeleteSnapshot(ctx, first); err != nil {
			t.Fatal(err)
		}
		pl.settle()
		fb.Fail(faulty.Remove, blob.PackFile, 2, errors.New("injected: storage refused the removal"))
		if err := gcUntilError(ctx, r); err == nil {
			t.Fatal("GC never reached the failing removal")
		}
		fb.Reset()
		_, vms, _ := backup(t, r, []string{p}, nil)
		checkRestores(t, r, vms[0], p, "the process whose GC failed")
		r2, _ := pl.open(t)
		checkRestores(t, r2, vms[0], p, "a fresh process")
	})
}

// TestRaceGCKilled (race 2): a GC process killed mid-way (after deleting
// some packs) must not leave another process deduplicating against them.
func TestRaceGCKilled(t *testing.T) {
	if env := os.Getenv("CSBS_TEST_GC_CHILD"); env != "" {
		gcChild(env)
		return
	}
	onBackends(t, func(t *testing.T, pl place) {
		a, _ := pl.open(t)
		ctx := context.Background()
		p := filepath.Join(t.TempDir(), "img")
		writeImage(t, p, 60*cs, 22, region{kind: "random", off: 0, n: 60 * cs})
		first, _, _ := backup(t, a, []string{p}, nil)
		if err := a.DeleteSnapshot(ctx, first); err != nil {
			t.Fatal(err)
		}
		pl.settle()
		env, _ := json.Marshal(pl)
		cmd := exec.Command(os.Args[0], "-test.run=^TestRaceGCKilled$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CSBS_TEST_GC_CHILD="+string(env))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("the GC child was not killed at its second pack removal: %v\n%s", err, out)
		}
		// a loaded its index before the child's GC; the same data again:
		_, vms, _ := backup(t, a, []string{p}, nil)
		checkRestores(t, a, vms[0], p, "the process that outlived the GC")
		b, _ := pl.open(t)
		checkRestores(t, b, vms[0], p, "a fresh process")
	})
}

// MarshalJSON and UnmarshalJSON carry a place to a child process.
func (p place) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"backend": p.backend, "where": p.where, "margin": p.opts.GCMargin})
}

func (p *place) UnmarshalJSON(b []byte) error {
	var m struct {
		Backend, Where string
		Margin         time.Duration
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	p.backend, p.where, p.opts = m.Backend, m.Where, testOpts
	p.opts.GCMargin = m.Margin
	return nil
}

// gcChild runs GC on the place described by env and SIGKILLs itself at the
// second pack removal.
func gcChild(env string) {
	var pl place
	if err := json.Unmarshal([]byte(env), &pl); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	be, err := pl.backendOf()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fb := faulty.Wrap(be)
	fb.Add(faulty.Rule{Op: faulty.Remove, Type: blob.PackFile, Nth: 2, Hook: func(context.Context, blob.Handle) error {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}})
	r, err := OpenBackend(context.Background(), fb, password, pl.opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	err = gcUntilError(context.Background(), r)
	fmt.Fprintln(os.Stderr, "GC ended without reaching the second pack removal:", err)
	os.Exit(3)
}

// TestRaceFinalizeAfterAbort (race 3): packs still being finalized when a
// backup is aborted must not be deleted by another process's GC (and then
// be marked durable when their index is written).
func TestRaceFinalizeAfterAbort(t *testing.T) {
	onBackends(t, func(t *testing.T, pl place) {
		a, fb := pl.open(t)
		ctx := context.Background()
		p := filepath.Join(t.TempDir(), "img")
		writeImage(t, p, 40*cs, 23, region{kind: "random", off: 0, n: 40 * cs})

		release := make(chan struct{})
		var once sync.Once
		unblock := func() { once.Do(func() { close(release) }) }
		defer unblock()
		blocked := make(chan struct{}, 16)
		fb.Add(faulty.Rule{Op: faulty.Save, Type: blob.IndexFile, Hook: func(ctx context.Context, h blob.Handle) error {
			blocked <- struct{}{}
			<-release
			return nil
		}})
		bk := a.NewBackup()
		if _, _, err := bk.Volume(ctx, p, 40*cs, nil, nil); err != nil {
			t.Fatal(err)
		}
		<-blocked // a full pack is saved; its index file is not yet
		bk.Abort()

		b, _ := pl.open(t)
		pl.settle()
		for range 3 {
			if _, err := b.GC(ctx); err != nil {
				t.Fatal(err)
			}
		}
		unblock()
		if err := a.packer.flush(); err != nil {
			t.Fatal(err)
		}
		_, vms, _ := backup(t, a, []string{p}, nil)
		checkRestores(t, a, vms[0], p, "the process that aborted")
		checkRestores(t, b, vms[0], p, "the process that ran GC")
	})
}

// TestRaceOtherProcessChunks (race 6): a process that did not make a backup
// accepts its restore, and deduplicates against the chunks it stored.
func TestRaceOtherProcessChunks(t *testing.T) {
	onBackends(t, func(t *testing.T, pl place) {
		a, _ := pl.open(t)
		b, _ := pl.open(t)
		ctx := context.Background()
		p := filepath.Join(t.TempDir(), "img")
		writeImage(t, p, 30*cs, 24, region{kind: "random", off: 0, n: 30 * cs})
		_, vms, _ := backup(t, a, []string{p}, nil)
		if err := b.CheckVolume(ctx, vms[0]); err != nil {
			t.Fatalf("the other process refuses the restore of a committed backup: %v", err)
		}
		_, _, sts := backup(t, b, []string{p}, nil)
		if sts[0].NewChunks != 0 {
			t.Fatalf("the other process stored %d of %d chunks again", sts[0].NewChunks, sts[0].Chunks)
		}
		checkRestores(t, b, vms[0], p, "the other process")
	})
}

// openAgain opens the local repository in dir once more, as another process
// would.
func openAgain(t testing.TB, dir string) *Repository {
	t.Helper()
	r, err := Open(dir, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// tick lets the file system's clock move on (it is coarse: file times of
// events a few milliseconds apart may be equal).
func tick() { time.Sleep(20 * time.Millisecond) }

// markedPack is where the marked-pack races begin: a repository (dir) and
// three processes on it, a (backups), gc and d (another backup); the image
// p (4 chunks) was backed up by a and the snapshot deleted again, and gc
// marked its pack while early, a backup of a that deduplicated against
// it, runs (so the pack stays on storage).
type markedPack struct {
	a, gc, d *Repository
	dir, p   string
	early    *Backup
	vm       *VolumeManifest // early's manifest, VolumeID "img"
	parent   *VolumeManifest // the deleted snapshot's manifest
}

func newMarkedPack(t *testing.T, seed uint64) *markedPack {
	t.Helper()
	a, dir := newRepo(t, testOpts)
	m := &markedPack{a: a, gc: openAgain(t, dir), d: openAgain(t, dir), dir: dir, p: filepath.Join(t.TempDir(), "img")}
	writeImage(t, m.p, 4*cs, seed, region{kind: "random", off: 0, n: 4 * cs})
	ctx := context.Background()
	first, vms, _ := backup(t, a, []string{m.p}, nil)
	m.parent = vms[0]
	// Storage times come from the file system's coarse clock: the pack
	// must be dated before early's lease, or GC takes it for one of
	// early's own and leaves it unmarked (young).
	tick()
	m.early = a.NewBackup()
	t.Cleanup(m.early.Abort)
	vm, st, err := m.early.Volume(ctx, m.p, 4*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.NewChunks != 0 {
		t.Fatalf("the backup stored %d chunks again; the test needs it to deduplicate", st.NewChunks)
	}
	vm.VolumeID = "img"
	m.vm = vm
	if err := a.DeleteSnapshot(ctx, first); err != nil {
		t.Fatal(err)
	}
	tick()
	if st, err := m.gc.GC(ctx); err != nil || st.PacksMarked == 0 || st.PacksDeleted != 0 {
		t.Fatalf("GC: %+v, %v; want the pack marked and kept for the running backup", st, err)
	}
	tick()
	return m
}

// collectThenCommit ends the early backup, has gc remove the marked pack,
// commits the late backup's manifest vm, and checks that another process
// (the late one could be killed now) restores it as the image.
func (m *markedPack) collectThenCommit(t *testing.T, late *Backup, vm *VolumeManifest) {
	t.Helper()
	ctx := context.Background()
	m.early.Abort()
	tick()
	if st, err := m.gc.GC(ctx); err != nil || st.PacksDeleted == 0 {
		t.Fatalf("GC: %+v, %v; want the marked pack removed", st, err)
	}
	vm.VolumeID = "img"
	if _, err := late.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}}); err != nil {
		t.Fatal(err)
	}
	checkRestores(t, openAgain(t, m.dir), vm, m.p, "a fresh process")
}

// TestRaceRestoreOfRevivableChunk (race 7): a backup deduplicates against a
// pack that a GC then marks deleted; its snapshot, committed after the mark,
// references the pack until the next GC revives it. A restore that begins
// meanwhile knows the chunk only in that marked pack and reads it there.
// Another backup stores the chunk again (marked packs are absent to
// deduplication), and a GC then removes the marked pack (a live copy
// exists, and it was marked before the restore began). The restore must
// still restore the committed snapshot: it finds the new copy. The torture
// test hit this under load.
func TestRaceRestoreOfRevivableChunk(t *testing.T) {
	t.Parallel()
	m := newMarkedPack(t, 25)
	rr := openAgain(t, m.dir) // the restore's process
	ctx := context.Background()
	if _, err := m.early.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*m.vm}}); err != nil {
		t.Fatal(err)
	}
	tick()

	// The restore begins: its index has the chunks only in marked packs.
	release, err := rr.begin(ctx, leaseRestore)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	tick()
	_, _, sts := backup(t, m.d, []string{m.p}, nil)
	if sts[0].NewChunks != 4 {
		t.Fatalf("the other backup stored %d chunks; want all 4 again (their packs are marked)", sts[0].NewChunks)
	}
	if err := m.d.packer.flush(); err != nil {
		t.Fatal(err)
	}
	tick()
	if st, err := m.gc.GC(ctx); err != nil || st.PacksDeleted == 0 {
		t.Fatalf("GC: %+v, %v; want the marked packs removed (live copies exist)", st, err)
	}

	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(m.vm.Size); err != nil {
		t.Fatal(err)
	}
	if err := rr.restoreChunks(ctx, m.vm, &restoreWriter{dst: f}, func(int64, int64) error { return nil }, out, nil); err != nil {
		t.Fatalf("restore of a committed snapshot: %v", err)
	}
	if fileSum(t, out) != fileSum(t, m.p) {
		t.Fatal("restored bytes differ")
	}
}

// TestRaceCommitOfChunkInMarkedPack (race 8): a backup that begins after
// GC marked a pack stores the pack's chunks again (marked packs are absent
// to deduplication). Its Commit must wait until its own copies are durable:
// the marked pack is no reason to commit early, since a GC may remove it
// before the next GC sees the snapshot (nothing older protects it), and the
// snapshot then references chunks that are nowhere on storage.
func TestRaceCommitOfChunkInMarkedPack(t *testing.T) {
	t.Parallel()
	m := newMarkedPack(t, 26)
	late := m.d.NewBackup()
	defer late.Abort()
	vm, st, err := late.Volume(context.Background(), m.p, 4*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.NewChunks != 4 {
		t.Fatalf("the late backup stored %d chunks; want all 4 again (their pack is marked)", st.NewChunks)
	}
	m.collectThenCommit(t, late, vm)
}

// TestRaceParentChunksInMarkedPack (race 9): a backup that takes unchanged
// chunks from its parent's manifest unread (changed-block tracking), or
// commits a manifest from elsewhere, after the parent was deleted and GC
// marked its packs, must not reference those packs: GC removes them once
// the operations that began before the mark end, before it ever lists the
// new snapshot. The chunks are read and stored again; a manifest committed
// as it is is refused, naming the reason.
func TestRaceParentChunksInMarkedPack(t *testing.T) {
	t.Parallel()
	m := newMarkedPack(t, 27)
	ctx := context.Background()
	f, err := os.Open(m.p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	late := m.d.NewBackup()
	defer late.Abort()
	vm, st, err := late.VolumeFrom(ctx, Source{Name: m.p, Data: f, Size: 4 * cs, Allocated: []Range{{0, 4 * cs}}, ChangesKnown: true}, m.parent, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.ReusedBytes != 0 || st.NewChunks != 4 {
		t.Fatalf("reused %d bytes, stored %d chunks; want every chunk read and stored again", st.ReusedBytes, st.NewChunks)
	}
	asIs := m.d.NewBackup()
	defer asIs.Abort()
	_, err = asIs.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*m.parent}})
	if err == nil || !strings.Contains(err.Error(), "garbage collection is deleting") {
		t.Fatalf("commit of the deleted parent's manifest: %v; want a refusal naming the garbage collection", err)
	}

	m.collectThenCommit(t, late, vm)
}

// TestRaceLeftoverIndexFile (race 10): a GC stopped after writing its
// consolidated index file and before removing the files it supersedes
// leaves them behind. A later GC that consolidates that file again must
// supersede the leftovers too: otherwise, once the file that superseded
// them is gone, a process finds a leftover without its successor, takes its
// packs (since removed) for live and deduplicates against them.
func TestRaceLeftoverIndexFile(t *testing.T) {
	t.Parallel()
	a, dir := newRepo(t, testOpts)
	g, fb := openFaulty(t, dir)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 4*cs, 28, region{kind: "random", off: 0, n: 4 * cs})
	first, _, _ := backup(t, a, []string{p}, nil)

	fb.Fail(faulty.Remove, blob.IndexFile, 0, errors.New("injected: the GC stops here"))
	if _, err := g.GC(ctx); err == nil {
		t.Fatal("GC never removed a superseded index file; the test needs it to")
	}
	fb.Reset()
	if err := a.DeleteSnapshot(ctx, first); err != nil {
		t.Fatal(err)
	}
	if st, err := g.GC(ctx); err != nil || st.PacksDeleted == 0 {
		t.Fatalf("GC: %+v, %v; want the pack removed", st, err)
	}

	_, vms, sts := backup(t, openAgain(t, dir), []string{p}, nil)
	if sts[0].NewChunks != 4 {
		t.Errorf("a new process stored %d of 4 chunks: it deduplicated against a removed pack", sts[0].NewChunks)
	}
	checkRestores(t, openAgain(t, dir), vms[0], p, "a fresh process")
}

// TestGCPackMissing: a pack missing from storage (lost, or removed while a
// file listing it stayed behind) holds no copy of its chunks. A referenced
// chunk whose other copy is in a marked pack keeps that pack: GC revives it
// instead of removing it.
func TestGCPackMissing(t *testing.T) {
	t.Parallel()
	m := newMarkedPack(t, 29)
	ctx := context.Background()
	// Another backup stores the chunks again in a second pack.
	_, _, sts := backup(t, m.d, []string{m.p}, nil)
	if sts[0].NewChunks != 4 {
		t.Fatalf("the second backup stored %d chunks; want 4", sts[0].NewChunks)
	}
	if _, err := m.early.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*m.vm}}); err != nil {
		t.Fatal(err)
	}
	// The second pack is lost.
	m.d.idx.mu.Lock()
	var second packID
	for _, ps := range m.d.idx.packs {
		if ps.live() {
			second = ps.id
		}
	}
	m.d.idx.mu.Unlock()
	l, err := local.Open(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(l.Path(packHandle(second))); err != nil {
		t.Fatal(err)
	}
	tick()
	if _, err := m.gc.GC(ctx); err != nil {
		t.Fatal(err)
	}
	checkRestores(t, openAgain(t, m.dir), m.vm, m.p, "after GC with a pack missing")
}
