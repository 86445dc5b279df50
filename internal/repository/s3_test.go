package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/faulty"
	"github.com/csbs/csbs/internal/repository/blob/s3"
	"github.com/csbs/csbs/internal/repository/blob/s3/s3test"
)

// s3Opts: S3 times are whole seconds, so the GC margin must exceed one.
var s3Opts = func() Options { o := testOpts; o.GCMargin = 1100 * time.Millisecond; return o }()

// s3Bucket starts versitygw with a fresh bucket and returns a function
// that opens a backend on it (each call a new one, as another process's).
func s3Bucket(t *testing.T) func() *s3.Backend {
	srv := s3test.Start(t)
	cfg := srv.Config(srv.NewBucket(t), "csbs/repo")
	return func() *s3.Backend {
		be, err := s3.Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return be
	}
}

// TestS3EndToEnd runs a repository on a real S3 server (versitygw): init,
// a full and an incremental backup, restore from a freshly opened
// repository (nothing but the bucket and the password), delete, GC, verify.
func TestS3EndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	openBE := s3Bucket(t)
	r, err := InitBackend(ctx, openBE(), password, s3Opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitBackend(ctx, openBE(), password, s3Opts); !errors.Is(err, ErrExists) {
		t.Fatalf("InitBackend over a repository: %v, want ErrExists", err)
	}
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	// a spans several packs (1 MiB each in s3Opts); b is a half copy of a.
	writeImage(t, a, 60*cs, 1, region{kind: "random", off: 0, n: 40 * cs}, region{kind: "text", off: 45 * cs, n: 10 * cs})
	writeImage(t, b, 40*cs, 2, region{kind: "random", off: 20 * cs, n: 20 * cs})
	cp(t, a, b, 20*cs)
	ida, vmsA, _ := backup(t, r, []string{a}, nil)
	idb, _, stb := backup(t, r, []string{b}, nil)
	if stb[0].StoredBytes >= stb[0].UsedBytes {
		t.Errorf("b shares half of a, yet stored %d of %d bytes", stb[0].StoredBytes, stb[0].UsedBytes)
	}
	// Incremental: a changed in one chunk.
	writeImage(t, filepath.Join(tmp, "patch"), cs, 9, region{kind: "random", off: 0, n: cs})
	cp(t, filepath.Join(tmp, "patch"), a, cs)
	ida2, _, sta2 := backup(t, r, []string{a}, vmsA)
	if sta2[0].ChangedBytes != cs {
		t.Errorf("incremental backup read %d changed bytes, want %d", sta2[0].ChangedBytes, cs)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r, err = OpenBackend(ctx, openBE(), password, s3Opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	check := func(id, want string) {
		t.Helper()
		s, err := r.LoadSnapshot(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(tmp, "out")
		if err := restore(t, r, &s.Volumes[0], out); err != nil {
			t.Fatalf("restore %s: %v", id, err)
		}
		if err := os.Truncate(out, s.Volumes[0].Size); err != nil {
			t.Fatal(err)
		}
		if fileSum(t, out) != fileSum(t, want) {
			t.Fatalf("snapshot %s restored from S3 differs from %s", id, want)
		}
	}
	check(ida2, a)
	check(idb, b)

	before, err := r.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteSnapshot(ctx, ida); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteSnapshot(ctx, idb); err != nil {
		t.Fatal(err)
	}
	time.Sleep(s3Opts.GCMargin + time.Second) // GC marks only packs older than the margin (S3 times are whole seconds)
	st, err := r.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := r.Size(ctx)
	if st.PacksDeleted+st.PacksRewritten == 0 || after >= before {
		t.Fatalf("GC on S3 %+v: size %d -> %d", st, before, after)
	}
	check(ida2, a)
	rep, err := r.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("verify on S3 after GC: %v %+v", err, rep)
	}
}

// TestPackTempHasNoName: with a backend that saves packs from a reader (S3;
// here the local one behind faulty, which hides its FileSaver), the pack
// being filled lives in the system's temporary directory without a name, so
// a process killed meanwhile leaves nothing there. Before, each killed
// process left a csbs-pack-* file behind (the torture test's workers did).
func TestPackTempHasNoName(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	_, dir := newRepo(t, testOpts)
	r, fb := openFaulty(t, dir)
	var seen []string
	fb.Add(faulty.Rule{Op: faulty.Save, Type: blob.PackFile, Hook: func(context.Context, blob.Handle) error {
		ents, err := os.ReadDir(tmp)
		if err != nil {
			return err
		}
		for _, e := range ents {
			seen = append(seen, e.Name())
		}
		return nil
	}})
	p := filepath.Join(t.TempDir(), "img")
	writeImage(t, p, 4*cs, 81, region{kind: "random", off: 0, n: 4 * cs})
	id, vms, _ := backup(t, r, []string{p}, nil)
	if len(seen) > 0 {
		t.Fatalf("while a pack was saved, the temporary directory held %v; want nothing", seen)
	}
	if id == "" || len(vms) != 1 {
		t.Fatalf("backup: id %q, %d manifests", id, len(vms))
	}
	checkRestores(t, r, vms[0], p, "a backup whose packs were saved from unnamed files")
}
