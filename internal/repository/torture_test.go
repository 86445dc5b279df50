package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob/s3"
	"github.com/csbs/csbs/internal/repository/blob/s3/s3test"
)

// tortureOpts: leases of killed processes go stale in 4 s; on S3, whose
// times are whole seconds, the GC margin is over a second.
func tortureOpts(backend string) Options {
	o := testOpts
	o.LeaseTTL = 4 * time.Second
	if backend == "s3" {
		o.GCMargin = 1100 * time.Millisecond
	}
	return o
}

// tortureOpen opens the repository a torture run works on: a directory, or
// an S3 bucket whose configuration (JSON) is in place.
func tortureOpen(backend, place string) (*Repository, error) {
	ctx := context.Background()
	if backend == "local" {
		return Open(place, password, tortureOpts(backend))
	}
	var cfg s3.Config
	if err := json.Unmarshal([]byte(place), &cfg); err != nil {
		return nil, err
	}
	be, err := s3.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return OpenBackend(ctx, be, password, tortureOpts(backend))
}

// TestTorture runs three OS processes (this test binary, re-executed) that
// back up, delete, collect garbage and restore at random on one repository,
// and SIGKILLs them at random; on a local directory and on S3 (versitygw).
// Afterwards every snapshot in the repository restores byte-exactly (each
// snapshot carries the SHA-256 of its image) and verify is clean.
// CSBS_TORTURE_SEED and CSBS_TORTURE_SECONDS (default 15) replay or
// lengthen a run.
func TestTorture(t *testing.T) {
	if os.Getenv("CSBS_TORTURE_CHILD") != "" {
		tortureChild()
		return
	}
	if testing.Short() {
		t.Skip("torture test skipped in -short mode")
	}
	t.Parallel()
	t.Run("local", func(t *testing.T) {
		t.Parallel()
		_, dir := newRepo(t, tortureOpts("local"))
		torture(t, "local", dir)
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		srv := s3test.Start(t)
		cfg := srv.Config(srv.NewBucket(t), "torture")
		be, err := s3.Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		r, err := InitBackend(context.Background(), be, password, tortureOpts("s3"))
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		place, _ := json.Marshal(cfg)
		torture(t, "s3", string(place))
	})
}

func torture(t *testing.T, backend, place string) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CSBS_TORTURE_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	secs := 15
	if s := os.Getenv("CSBS_TORTURE_SECONDS"); s != "" {
		secs, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d (CSBS_TORTURE_SEED=%d replays the schedule of kills)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	work := t.TempDir()

	type child struct {
		cmd *exec.Cmd
		out *bytes.Buffer
		end chan error
	}
	start := func(i, gen int) *child {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTorture$", "-test.count=1")
		// A worker works until killed: it must die with this process too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Env = append(os.Environ(), "CSBS_TORTURE_CHILD=1", "CSBS_TORTURE_BACKEND="+backend, "CSBS_TORTURE_PLACE="+place, "CSBS_TORTURE_WORK="+work,
			fmt.Sprintf("CSBS_TORTURE_CHILD_SEED=%d", seed+uint64(1000*i+gen)), fmt.Sprintf("CSBS_TORTURE_NAME=c%d-%d", i, gen))
		c := &child{cmd: cmd, out: new(bytes.Buffer), end: make(chan error, 1)}
		cmd.Stdout, cmd.Stderr = c.out, c.out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { c.end <- cmd.Wait() }()
		return c
	}
	kids := make([]*child, 3)
	gens := make([]int, 3)
	for i := range kids {
		kids[i] = start(i, 0)
	}
	// A failure below (t.Fatal) must not leave workers running.
	t.Cleanup(func() {
		for _, c := range kids {
			_ = c.cmd.Process.Signal(syscall.SIGKILL)
		}
	})
	checkAlive := func(c *child) {
		select {
		case err := <-c.end:
			t.Fatalf("a worker ended by itself: %v\n%s", err, c.out)
		default:
		}
	}
	kills := 0
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
		i := rng.IntN(len(kids))
		checkAlive(kids[i])
		_ = kids[i].cmd.Process.Signal(syscall.SIGKILL)
		<-kids[i].end
		kills++
		gens[i]++
		kids[i] = start(i, gens[i])
	}
	for _, c := range kids {
		checkAlive(c)
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.end
	}

	// The killed workers' leases go stale; then GC collects what they left.
	time.Sleep(tortureOpts(backend).LeaseTTL + 1200*time.Millisecond) // S3 times are whole seconds
	r, err := tortureOpen(backend, place)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	if _, err := r.GC(ctx); err != nil {
		t.Fatal(err)
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		out := filepath.Join(work, "check-"+s.ID)
		if err := restore(t, r, &s.Volumes[0], out); err != nil {
			t.Fatalf("snapshot %s: %v", s.ID, err)
		}
		if got := hex.EncodeToString(sumFile(t, out)); got != s.Meta["sha"] {
			t.Fatalf("snapshot %s restores to different bytes", s.ID)
		}
	}
	rep, err := r.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
	t.Logf("%s: %d kills, %d snapshots restored", backend, kills, len(snaps))
}

func sumFile(t testing.TB, p string) []byte {
	s := fileSum(t, p)
	return s[:]
}

// tortureChild works on the repository until killed. It exits non-zero only
// when it finds a committed snapshot that does not restore.
func tortureChild() {
	work, name := os.Getenv("CSBS_TORTURE_WORK"), os.Getenv("CSBS_TORTURE_NAME")
	seed, _ := strconv.ParseUint(os.Getenv("CSBS_TORTURE_CHILD_SEED"), 10, 64)
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, name+": "+format+"\n", args...)
		os.Exit(1)
	}
	r, err := tortureOpen(os.Getenv("CSBS_TORTURE_BACKEND"), os.Getenv("CSBS_TORTURE_PLACE"))
	if err != nil {
		fail("open: %v", err)
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	ctx := context.Background()
	for n := 0; ; n++ {
		switch op := rng.IntN(10); {
		case op < 5:
			img := filepath.Join(work, fmt.Sprintf("%s-%d", name, n))
			sum := tortureImage(img, rng)
			b := r.NewBackup()
			vm, _, err := b.Volume(ctx, img, fileSize(img), nil, nil)
			if err != nil {
				fail("backup: %v", err)
			}
			vm.VolumeID = "v"
			if _, err := b.Commit(ctx, &Snapshot{Meta: map[string]string{"sha": sum}, Volumes: []VolumeManifest{*vm}}); err != nil {
				if !strings.Contains(err.Error(), "lease") {
					fail("commit: %v", err)
				}
				// A lease whose heartbeats were late on a loaded machine:
				// refusing to commit is the right answer.
				b.Abort()
			}
			os.Remove(img)
		case op < 7:
			ids, err := r.snapshotIDs(ctx)
			if err != nil {
				fail("list: %v", err)
			}
			if len(ids) > 0 {
				if err := r.DeleteSnapshot(ctx, ids[rng.IntN(len(ids))]); err != nil {
					fail("delete: %v", err)
				}
			}
		case op < 8:
			if _, err := r.GC(ctx); err != nil && !errors.Is(err, ErrBusy) && !strings.Contains(err.Error(), "lease") {
				fail("gc: %v", err) // a GC whose lease lapsed on a loaded machine stops: the right answer
			}
		default:
			ids, err := r.snapshotIDs(ctx)
			if err != nil || len(ids) == 0 {
				continue
			}
			s, err := r.LoadSnapshot(ctx, ids[rng.IntN(len(ids))])
			if errors.Is(err, ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				fail("load snapshot: %v", err)
			}
			out := filepath.Join(work, name+"-restore")
			f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				fail("%v", err)
			}
			err = r.RestoreVolume(ctx, &s.Volumes[0], f, nil)
			f.Close()
			if err != nil {
				if _, lerr := r.LoadSnapshot(ctx, s.ID); errors.Is(lerr, ErrNotFound) {
					continue // deleted meanwhile: no longer a committed snapshot
				}
				fail("restore of committed snapshot %s: %v", s.ID, err)
			}
			b, _ := os.ReadFile(out)
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != s.Meta["sha"] {
				fail("snapshot %s restored to different bytes", s.ID)
			}
		}
	}
}

// tortureImage writes an image of 4 to 24 chunks, each either one of 48
// chunks shared by all workers (so backups deduplicate against each other)
// or fresh random bytes, and returns its SHA-256.
func tortureImage(p string, rng *rand.Rand) string {
	n := 4 + rng.IntN(21)
	b := make([]byte, n*cs)
	for i := range n {
		c := b[i*cs : (i+1)*cs]
		src := rng
		if rng.IntN(3) > 0 {
			k := uint64(rng.IntN(48))
			src = rand.New(rand.NewPCG(k, k))
		}
		for j := 0; j < len(c); j += 8 {
			v := src.Uint64()
			for k := range 8 {
				c[j+k] = byte(v >> (8 * k))
			}
		}
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		panic(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		panic(err)
	}
	return fi.Size()
}
