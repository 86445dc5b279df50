package service

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/store"
)

// TestVerifyBackups: which backups a verification reads (a project's or
// all, those not verified within max_age, named ones) and what it records
// for each: intact, damaged with the disk and offset, or damaged because
// its data is gone; a backup deleted meanwhile is not recorded.
// verifyFixture is a service on a fresh repository and SQLite database,
// with add, which stores a backup of a random disk image of its own.
type verifyFixture struct {
	dir  string
	repo *repository.Repository
	db   store.Store
	svc  *Service
	add  func(project, name string, seed byte) (*store.Item, *repository.VolumeManifest)
}

func newVerifyFixture(t *testing.T) *verifyFixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	opts := repository.Options{ChunkSize: 64 << 10, PackSize: 1 << 20, Workers: 2, KDFTime: 1, KDFMemoryKiB: 64}
	repo, err := repository.Init(filepath.Join(dir, "repo"), []byte("pw"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	db, err := store.Open(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc := New(Config{Store: db, Repo: repo, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})

	// One backup per (project, disk image); each image's bytes its own.
	add := func(project, name string, seed byte) (*store.Item, *repository.VolumeManifest) {
		img := filepath.Join(dir, name+".img")
		b := make([]byte, 4*64<<10)
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(img, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cp := &store.Checkpoint{ProjectID: project, PlanID: "manual", CreatedAt: time.Now()}
		if err := db.InsertCheckpoint(ctx, cp); err != nil {
			t.Fatal(err)
		}
		it := &store.Item{ID: newID(), CheckpointID: cp.ID, ProjectID: project, Name: name, ResourceID: "srv-" + name,
			Status: store.StatusAvailable, CreatedAt: time.Now()}
		bk := repo.NewBackupIn(project)
		vm, _, err := bk.Volume(ctx, img, int64(len(b)), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		vm.VolumeID = name + "-vol"
		it.Info.SnapshotID = strings.ReplaceAll(it.ID, "-", "")
		if _, err := bk.Commit(ctx, &repository.Snapshot{ID: it.Info.SnapshotID, Volumes: []repository.VolumeManifest{*vm}}); err != nil {
			t.Fatal(err)
		}
		bk.Abort()
		if err := db.InsertItem(ctx, it); err != nil {
			t.Fatal(err)
		}
		return it, vm
	}
	return &verifyFixture{dir: dir, repo: repo, db: db, svc: svc, add: add}
}

func TestVerifyBackups(t *testing.T) {
	ctx := context.Background()
	f := newVerifyFixture(t)
	dir, repo, db, svc, add := f.dir, f.repo, f.db, f.svc, f.add
	a, vmA := add("p1", "a", 3)
	b, _ := add("p1", "b", 5)
	c, _ := add("p2", "c", 7)

	// Project p1 only: a and b, intact.
	run, err := svc.VerifyBackups(ctx, VerifyRequest{ProjectID: "p1"})
	if err != nil || run.Backups != 2 || run.Damaged != 0 || run.Bytes != 2*4*64<<10 {
		t.Fatalf("verify p1: %+v %v", run, err)
	}
	if vs, _ := db.VerificationsOf(ctx, []string{a.ID, b.ID, c.ID}); len(vs) != 2 || vs[c.ID] != nil {
		t.Fatalf("verifications after p1's run: %v", vs)
	}
	// All projects, not verified within an hour: only c.
	if run, err = svc.VerifyBackups(ctx, VerifyRequest{MaxAge: time.Hour}); err != nil || run.Backups != 1 || run.Results[0].ItemID != c.ID {
		t.Fatalf("verify with max_age: %+v %v", run, err)
	}

	// Damage a's chunk 2 (flip a byte of its copy in the pack).
	damagePackOf(t, filepath.Join(dir, "repo"))
	// b's snapshot vanishes while b stays available: its data is gone.
	if err := repo.DeleteSnapshot(ctx, b.Info.SnapshotID); err != nil {
		t.Fatal(err)
	}
	// c is being deleted: its snapshot goes first; not damage.
	if err := repo.DeleteSnapshot(ctx, c.Info.SnapshotID); err != nil {
		t.Fatal(err)
	}
	c.Status = store.StatusDeleting
	if err := db.UpdateItem(ctx, c); err != nil {
		t.Fatal(err)
	}
	run, err = svc.VerifyBackups(ctx, VerifyRequest{ItemIDs: []string{a.ID}, ProjectID: "p1"})
	if err != nil || run.Damaged != 1 {
		t.Fatalf("verify of the damaged backup: %+v %v", run, err)
	}
	v := run.Results[0]
	if !v.Damaged || len(v.Damage) != 1 || v.Damage[0].VolumeID != vmA.VolumeID || len(v.Damage[0].Offsets) == 0 || !strings.Contains(v.Reason, "a-vol") {
		t.Fatalf("recorded %+v", v)
	}
	if _, err = svc.VerifyBackups(ctx, VerifyRequest{}); err != nil {
		t.Fatal(err)
	}
	vs, _ := db.VerificationsOf(ctx, []string{b.ID, c.ID})
	if !vs[b.ID].Damaged || !strings.Contains(vs[b.ID].Reason, "not in the repository") {
		t.Fatalf("backup whose data is gone: %+v", vs[b.ID])
	}
	if vs[c.ID].Damaged {
		t.Fatalf("a backup being deleted was recorded damaged: %+v", vs[c.ID])
	}
	if n, _ := db.CountDamaged(ctx); n != 2 {
		t.Fatalf("damaged backups: %d, want 2 (a and b)", n)
	}
	// A named backup that is not available, or unknown, is refused.
	if _, err := svc.VerifyBackups(ctx, VerifyRequest{ProjectID: "p2", ItemIDs: []string{c.ID}}); err == nil || !strings.Contains(err.Error(), CodeItemNotAvailable) {
		t.Fatalf("verify of a backup being deleted: %v", err)
	}
	if _, err := svc.VerifyBackups(ctx, VerifyRequest{ProjectID: "p2", ItemIDs: []string{a.ID}}); err == nil || !strings.Contains(err.Error(), CodeItemNotFound) {
		t.Fatalf("verify of another project's backup: %v", err)
	}
}

// TestScheduledVerifyOncePerFireTime: processes sharing the database
// each run the verification schedule; a fire time is verified by the one
// that records it first, the others skip it, and the next fire time runs
// again.
func TestScheduledVerifyOncePerFireTime(t *testing.T) {
	ctx := context.Background()
	f := newVerifyFixture(t)
	f.add("p1", "a", 3)
	other := New(Config{Store: f.db, Repo: f.repo, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	at := time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC)
	first, err := f.svc.scheduledVerify(ctx, at, time.Nanosecond)
	if err != nil || first == nil || first.Backups != 1 {
		t.Fatalf("first process at %v: %+v, %v; want one backup verified", at, first, err)
	}
	if again, err := other.scheduledVerify(ctx, at, time.Nanosecond); err != nil || again != nil {
		t.Fatalf("second process at the same fire time: %+v, %v; want it skipped", again, err)
	}
	next := at.Add(24 * time.Hour)
	if run, err := other.scheduledVerify(ctx, next, time.Nanosecond); err != nil || run == nil || run.Backups != 1 {
		t.Fatalf("second process at the next fire time: %+v, %v; want one backup verified", run, err)
	}
}

// damagePackOf flips a byte inside the first blob of every pack.
func damagePackOf(t *testing.T, repoDir string) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(repoDir, "data", "*", "*"))
	for _, p := range packs {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var one [1]byte
		f.ReadAt(one[:], 100)
		one[0] ^= 0x40
		f.WriteAt(one[:], 100)
		f.Close()
	}
}
