package repository

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/faulty"
	"github.com/csbs/csbs/internal/repository/blob/local"
)

func openWith(t *testing.T, dir string, opts Options) (*Repository, *faulty.Backend) {
	t.Helper()
	l, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fb := faulty.Wrap(l)
	r, err := OpenBackend(context.Background(), fb, password, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, fb
}

// TestStaleLeaseRefusesCommit: a backup whose heartbeats did not reach the
// repository for longer than the lease TTL must not commit (a GC may have
// taken it for dead and removed what it deduplicated against).
func TestStaleLeaseRefusesCommit(t *testing.T) {
	t.Parallel()
	opts := testOpts
	opts.LeaseTTL = 300 * time.Millisecond
	_, dir := newRepo(t, opts)
	r, fb := openWith(t, dir, opts)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 8*cs, 31, region{kind: "random", off: 0, n: 8 * cs})
	b := r.NewBackup()
	defer b.Abort()
	vm, _, err := b.Volume(ctx, p, 8*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fb.Fail(faulty.Save, blob.LeaseFile, 0, errors.New("injected: storage unreachable"))
	time.Sleep(opts.LeaseTTL + 100*time.Millisecond)
	fb.Reset() // storage is back, but the lease had a gap
	if _, err := b.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}}); err == nil {
		t.Fatal("a backup whose lease went stale committed")
	}
	if snaps, err := r.Snapshots(ctx); err != nil || len(snaps) != 0 {
		t.Fatalf("snapshots after the refused commit: %d %v", len(snaps), err)
	}
}

// TestGCKeepsWhatRunningBackupUses: another process deletes the only
// snapshot of some data and collects garbage while a backup that
// deduplicated against that data runs; the packs are marked but not removed,
// and the backup's commit revives them.
func TestGCKeepsWhatRunningBackupUses(t *testing.T) {
	t.Parallel()
	a, b := openTwice(t)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 30*cs, 32, region{kind: "random", off: 0, n: 30 * cs})
	first, _, _ := backup(t, a, []string{p}, nil)
	// The file system's clock is coarse: a pack dated in the same tick as
	// the lease below would count as possibly the running backup's (young),
	// and would rightly not be marked.
	time.Sleep(20 * time.Millisecond)

	x := a.NewBackup()
	defer x.Abort()
	vm, st, err := x.Volume(ctx, p, 30*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.NewChunks != 0 {
		t.Fatalf("the second backup stored %d chunks; the test needs it to deduplicate", st.NewChunks)
	}
	if err := b.DeleteSnapshot(ctx, first); err != nil {
		t.Fatal(err)
	}
	gst, err := b.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gst.PacksMarked == 0 || gst.PacksDeleted != 0 || gst.PacksPending == 0 {
		t.Fatalf("GC while the backup runs: %+v; want packs marked, pending, none deleted", gst)
	}
	// A backup that begins now does not deduplicate against marked packs.
	_, _, sts := backup(t, b, []string{p}, nil)
	if sts[0].NewChunks == 0 {
		t.Fatal("a backup begun after the mark deduplicated against marked packs")
	}
	id, err := x.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.GC(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := b.LoadSnapshot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	checkRestores(t, b, &s.Volumes[0], p, "after GC")
	if rep, err := b.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
}

// TestGCNotStarvedByBackups: backups overlap so that one always runs, yet
// garbage marked before the oldest running backup began is removed.
func TestGCNotStarvedByBackups(t *testing.T) {
	t.Parallel()
	opts := testOpts
	opts.GCMargin = 200 * time.Millisecond
	a, dir := newRepo(t, opts)
	b, err := Open(dir, password, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	img := func(seed uint64) string {
		p := filepath.Join(t.TempDir(), "img")
		writeImage(t, p, 20*cs, seed, region{kind: "random", off: 0, n: 20 * cs})
		return p
	}
	first, _, _ := backup(t, a, []string{img(41)}, nil)
	if err := a.DeleteSnapshot(ctx, first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(opts.GCMargin + 50*time.Millisecond) // the garbage is older than the margin

	x1 := a.NewBackup()
	defer x1.Abort()
	p1 := img(42)
	vm1, _, err := x1.Volume(ctx, p1, 20*cs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := b.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksMarked == 0 || st.PacksDeleted != 0 {
		t.Fatalf("GC while x1 runs: %+v; want the garbage marked, not yet removed", st)
	}
	time.Sleep(opts.GCMargin + 50*time.Millisecond)
	x2 := a.NewBackup() // begins after the mark
	defer x2.Abort()
	if _, err := x1.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm1}}); err != nil {
		t.Fatal(err)
	}
	st, err = b.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksDeleted == 0 {
		t.Fatalf("GC while x2 runs: %+v; the garbage marked before x2 began must go", st)
	}
	checkRestores(t, b, vm1, p1, "after GC")
}

// TestOneGCAtATime: a GC that finds another process's GC running returns
// ErrBusy and removes nothing.
func TestOneGCAtATime(t *testing.T) {
	t.Parallel()
	a, dir := newRepo(t, testOpts)
	b, fb := openFaulty(t, dir)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 20*cs, 51, region{kind: "random", off: 0, n: 20 * cs})
	id, _, _ := backup(t, a, []string{p}, nil)
	if err := a.DeleteSnapshot(ctx, id); err != nil {
		t.Fatal(err)
	}
	inGC, resume := make(chan struct{}), make(chan struct{})
	fb.Add(faulty.Rule{Op: faulty.Save, Type: blob.IndexFile, Nth: 1, Hook: func(context.Context, blob.Handle) error {
		close(inGC)
		<-resume
		return nil
	}})
	done := make(chan error)
	go func() {
		_, err := b.GC(ctx)
		done <- err
	}()
	<-inGC
	st, err := a.GC(ctx)
	close(resume)
	if !errors.Is(err, ErrBusy) || st.PacksDeleted != 0 {
		t.Fatalf("GC while another runs: %+v %v, want ErrBusy", st, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestGCsBegunInOneTick: a GC whose lease is dated in the same tick of
// storage's clock as another GC's cannot tell whether that GC listed the
// leases before its own was saved (and went on): it gives way, whatever the
// names. Before the fix the lease with the smaller name went on, so two GCs
// ran at once when the other's name was larger (as here).
func TestGCsBegunInOneTick(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  func(context.Context, *Repository) error
	}{
		{"gc", func(ctx context.Context, r *Repository) error { _, err := r.GC(ctx); return err }},
		{"repair", func(ctx context.Context, r *Repository) error { _, err := r.Repair(ctx); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, dir := newRepo(t, testOpts)
			r, fb := openFaulty(t, dir)
			l, err := local.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			other := blob.Handle{Type: blob.LeaseFile, Name: "ffffffffffffffffffffffffffffffff"}
			t0 := time.Now().Add(-time.Second).Truncate(time.Millisecond)
			fb.Add(faulty.Rule{Op: faulty.Save, Type: blob.LeaseFile, Nth: 1,
				After: func(_ context.Context, h blob.Handle) error {
					// Another GC saved its lease in the same tick.
					if err := os.WriteFile(l.Path(other), []byte(`{"kind":"gc","host":"elsewhere","pid":1}`), 0o600); err != nil {
						return err
					}
					for _, h := range []blob.Handle{h, other} {
						if err := os.Chtimes(l.Path(h), t0, t0); err != nil {
							return err
						}
					}
					return nil
				}})
			if err := tc.run(context.Background(), r); !errors.Is(err, ErrBusy) {
				t.Fatalf("%s beside a GC begun in the same tick: %v, want ErrBusy", tc.name, err)
			}
		})
	}
}

// TestYields: the rule that keeps GCs (and repairs) one at a time.
func TestYields(t *testing.T) {
	t0 := time.Now()
	gl := &lease{name: "5", rec: leaseRecord{Kind: leaseGC}, start: t0}
	for _, tc := range []struct {
		name  string
		other liveLease
		want  bool
	}{
		{"earlier GC", liveLease{name: "9", rec: leaseRecord{Kind: leaseGC}, start: t0.Add(-time.Millisecond)}, true},
		{"GC in the same tick, larger name", liveLease{name: "9", rec: leaseRecord{Kind: leaseGC}, start: t0}, true},
		{"GC in the same tick, smaller name", liveLease{name: "1", rec: leaseRecord{Kind: leaseGC}, start: t0}, true},
		{"later GC", liveLease{name: "1", rec: leaseRecord{Kind: leaseGC}, start: t0.Add(time.Millisecond)}, false},
		{"earlier backup", liveLease{name: "1", rec: leaseRecord{Kind: leaseBackup}, start: t0.Add(-time.Hour)}, false},
		{"its own lease", liveLease{name: "5", rec: leaseRecord{Kind: leaseGC}, start: t0}, false},
	} {
		if got := yields(gl, tc.other); got != tc.want {
			t.Errorf("%s: yields = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestBarrier: a GC's barrier is the start of the earliest operation
// running beside it, less the margin; other GCs do not count, or stop it.
func TestBarrier(t *testing.T) {
	const margin = time.Minute
	r := &Repository{opts: Options{GCMargin: margin}}
	t0 := time.Now()
	gl := &lease{name: "5", rec: leaseRecord{Kind: leaseGC}, start: t0}
	op := func(name, kind string, d time.Duration) liveLease {
		return liveLease{name: name, rec: leaseRecord{Kind: kind}, start: t0.Add(d)}
	}
	for _, tc := range []struct {
		name string
		live []liveLease
		want time.Time
		err  error
	}{
		{"alone", []liveLease{op("5", leaseGC, 0)}, t0.Add(-margin), nil},
		{"an earlier backup", []liveLease{op("5", leaseGC, 0), op("1", leaseBackup, -time.Hour), op("2", leaseBackup, -time.Minute)}, t0.Add(-time.Hour - margin), nil},
		{"a later backup", []liveLease{op("5", leaseGC, 0), op("1", leaseBackup, time.Second)}, t0.Add(-margin), nil},
		{"a later GC", []liveLease{op("5", leaseGC, 0), op("9", leaseGC, time.Second)}, t0.Add(-margin), nil},
		{"an earlier GC", []liveLease{op("5", leaseGC, 0), op("9", leaseGC, -time.Second)}, time.Time{}, ErrBusy},
	} {
		got, err := r.barrier(gl, tc.live)
		if !errors.Is(err, tc.err) || !got.Equal(tc.want) {
			t.Errorf("%s: barrier = %v, %v; want %v, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// TestLeasesOfOtherProcesses: a live lease of another process holds GC
// back;
// the lease of a killed process stops counting after its TTL and is removed
// later.
func TestLeasesOfOtherProcesses(t *testing.T) {
	t.Parallel()
	r, dir := newRepo(t, testOpts)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 20*cs, 61, region{kind: "random", off: 0, n: 20 * cs})
	id, _, _ := backup(t, r, []string{p}, nil)
	if err := r.DeleteSnapshot(ctx, id); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // the garbage is older than the lease below
	lease := filepath.Join(dir, "leases", "0123456789abcdef0123456789abcdef")
	if err := os.WriteFile(lease, []byte(`{"kind":"backup","host":"elsewhere","pid":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := r.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksDeleted != 0 || st.PacksMarked == 0 {
		t.Fatalf("GC beside a live lease: %+v; want packs marked, none removed", st)
	}
	// The process dies: its lease is not re-saved.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(lease, old, old); err != nil {
		t.Fatal(err)
	}
	st, err = r.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksDeleted == 0 {
		t.Fatalf("GC after the lease went stale: %+v; want the packs removed", st)
	}
	if _, err := os.Stat(lease); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a lease stale for an hour is still there: %v", err)
	}
}
