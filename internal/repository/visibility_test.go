package repository

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/faulty"
	"github.com/csbs/csbs/internal/repository/blob/local"
)

// TestTombstoneDatedAfterVisible: storage may date an object by the start
// of its save while it becomes visible only at the end (S3 dates a
// multipart upload by its start; a file gets its time when written, before
// its sync and rename). A backup that begins in between does not see the
// tombstones GC is saving and may deduplicate against the packs they mark;
// GC must not then date those tombstones before the backup began, or its
// next pass removes the packs under the backup (a committed snapshot that
// does not restore: the torture test hit this about 1 run in 10).
func TestTombstoneDatedAfterVisible(t *testing.T) {
	t.Parallel()
	a, dir := newRepo(t, testOpts)
	g, fb := openFaulty(t, dir) // the GC's process
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 8*cs, 71, region{kind: "random", off: 0, n: 8 * cs})
	id, _, _ := backup(t, a, []string{p}, nil)
	if err := a.DeleteSnapshot(ctx, id); err != nil {
		t.Fatal(err)
	}

	// The GC process's storage dates an index file by the start of its
	// save, and the first save is slow.
	l, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	began := map[string]time.Time{}
	started, resume := make(chan struct{}), make(chan struct{})
	var first sync.Once
	fb.Add(faulty.Rule{Op: faulty.Save, Type: blob.IndexFile,
		Hook: func(_ context.Context, h blob.Handle) error {
			mu.Lock()
			began[h.Name] = time.Now()
			mu.Unlock()
			first.Do(func() {
				close(started)
				<-resume
			})
			return nil
		},
		After: func(_ context.Context, h blob.Handle) error {
			mu.Lock()
			t0 := began[h.Name]
			mu.Unlock()
			return os.Chtimes(l.Path(h), t0, t0)
		}})
	gcDone := make(chan error)
	go func() {
		_, err := g.GC(ctx)
		gcDone <- err
	}()
	<-started
	time.Sleep(20 * time.Millisecond) // the file system's clock is coarse
	// A backup begins while the tombstones are being saved; it does not
	// see them and deduplicates against the packs they mark.
	b := a.NewBackup()
	defer b.Abort()
	vm, st, err := b.Volume(ctx, p, 8*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.NewChunks != 0 {
		t.Fatalf("the backup stored %d chunks again; the test needs it to deduplicate", st.NewChunks)
	}
	close(resume)
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.GC(ctx); err != nil {
		t.Fatal(err)
	}
	checkRestores(t, a, vm, p, "a backup that began while GC saved its tombstones")
}

// hidingLister is a backend whose next index listing misses the files in
// hide, as a listing does that runs while a GC writes a consolidated file
// (too late to be listed) and removes the file it supersedes.
type hidingLister struct {
	blob.Backend
	mu   sync.Mutex
	hide map[string]bool
}

func (h *hidingLister) List(ctx context.Context, t blob.FileType, fn func(blob.FileInfo) error) error {
	h.mu.Lock()
	hide := h.hide
	if t == blob.IndexFile {
		h.hide = nil
	}
	h.mu.Unlock()
	return h.Backend.List(ctx, t, func(fi blob.FileInfo) error {
		if t == blob.IndexFile && hide[fi.Name] {
			return nil
		}
		return fn(fi)
	})
}

// TestListingMissesSuccessor: a process whose listing misses both a pack's
// index file (just superseded and removed by GC) and the consolidated file
// that now lists the pack must not forget the pack: its restores of
// committed backups would fail, and a GC of that process would write its
// index without the pack.
func TestListingMissesSuccessor(t *testing.T) {
	t.Parallel()
	_, dir := newRepo(t, testOpts)
	l, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	hl := &hidingLister{Backend: l}
	ctx := context.Background()
	r, err := OpenBackend(ctx, hl, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 8*cs, 81, region{kind: "random", off: 0, n: 8 * cs})
	_, vms, _ := backup(t, r, []string{p}, nil)
	before := indexNames(t, l)

	// Another process's GC consolidates the pack's index file.
	g, _ := openFaulty(t, dir)
	if _, err := g.GC(ctx); err != nil {
		t.Fatal(err)
	}
	after := indexNames(t, l)
	hl.mu.Lock()
	hl.hide = map[string]bool{}
	for name := range after {
		if !before[name] {
			hl.hide[name] = true // the consolidated file, written during the listing
		}
	}
	hl.mu.Unlock()
	if len(hl.hide) == 0 {
		t.Fatal("GC wrote no consolidated index file; the test needs one")
	}
	checkRestores(t, r, vms[0], p, "after a listing that missed the consolidated index")
}

func indexNames(t *testing.T, be blob.Backend) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	if err := be.List(context.Background(), blob.IndexFile, func(fi blob.FileInfo) error {
		names[fi.Name] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestTombstoneTakesSecondSaveDate: GC saves a file with new tombstones
// twice, and its tombstones are dated by the second save. A process that
// applied the file between the two saves must take the later date at its
// next refresh: with the first date, its own GC would remove the packs
// before the operations the second date holds them for have ended, and
// would write the early date into the files it consolidates.
func TestTombstoneTakesSecondSaveDate(t *testing.T) {
	t.Parallel()
	a, dir := newRepo(t, testOpts)
	// With a margin over two seconds a GC only marks (its next run
	// removes): the file it writes stays.
	gopts := testOpts
	gopts.GCMargin = 2100 * time.Millisecond
	g, fb := place{"local", dir, gopts}.open(t) // the GC's process
	x := openAgain(t, dir)                      // applies the file between the two saves
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 4*cs, 72, region{kind: "random", off: 0, n: 4 * cs})
	id, _, _ := backup(t, a, []string{p}, nil)
	if err := a.DeleteSnapshot(ctx, id); err != nil {
		t.Fatal(err)
	}
	time.Sleep(gopts.GCMargin + 100*time.Millisecond) // GC marks only packs older than its margin

	var mu sync.Mutex
	saves := map[string]int{}
	between, resume := make(chan struct{}), make(chan struct{})
	fb.Add(faulty.Rule{Op: faulty.Save, Type: blob.IndexFile,
		Hook: func(_ context.Context, h blob.Handle) error {
			mu.Lock()
			saves[h.Name]++
			n := saves[h.Name]
			mu.Unlock()
			if n == 2 {
				close(between)
				<-resume
				time.Sleep(20 * time.Millisecond) // the file system's clock is coarse
			}
			return nil
		}})
	gcDone := make(chan error)
	go func() {
		_, err := g.GC(ctx)
		gcDone <- err
	}()
	select {
	case <-between:
	case err := <-gcDone:
		t.Fatalf("GC ended (%v) without saving a file twice; the test needs it to mark a pack", err)
	}
	if err := x.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	close(resume)
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	if err := x.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	tombs := func(r *Repository) map[packID]int64 {
		r.idx.mu.Lock()
		defer r.idx.mu.Unlock()
		m := map[packID]int64{}
		for _, p := range r.idx.packs {
			if !p.gone && p.tomb != 0 {
				m[p.id] = p.tomb
			}
		}
		return m
	}
	want, got := tombs(g), tombs(x)
	if len(want) == 0 {
		t.Fatal("GC marked no pack; the test needs one")
	}
	for id, tomb := range want {
		if got[id] != tomb {
			t.Errorf("pack %v: marked at %d in the process that applied the file between its saves, at %d by the GC", id, got[id], tomb)
		}
	}
}
