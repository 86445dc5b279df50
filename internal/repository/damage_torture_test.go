package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestDamageTorture flips seeded random bits in packs, index files and
// snapshot files of a repository holding several backups (sharing data),
// then does what an operator does: verify (which quarantines what it finds
// damaged), repair (which indexes again what lost its index file), back up
// the servers' present disks again, and restore every backup. The new
// backups always restore byte-exactly (none deduplicated against a damaged
// copy); every older backup either restores byte-exactly or was named
// damaged by verify, and repair names exactly the backups that still
// cannot be restored; a restore that fails wrote no wrong byte.
func TestDamageTorture(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 3
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			damageTorture(t, uint64(seed))
		})
	}
}

func damageTorture(t *testing.T, seed uint64) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 0xda3a6e))
	r, dir := newRepo(t, testOpts)
	tmp := t.TempDir()

	// Three servers' disks; b shares a third of a; each backed up, then
	// changed in a few chunks and backed up again.
	const n = 24
	imgs := []string{filepath.Join(tmp, "a"), filepath.Join(tmp, "b"), filepath.Join(tmp, "c")}
	writeImage(t, imgs[0], n*cs, seed*3+1, region{kind: "random", off: 0, n: 12 * cs}, region{kind: "text", off: 14 * cs, n: 10 * cs})
	writeImage(t, imgs[1], n*cs, seed*3+2, region{kind: "random", off: 8 * cs, n: 16 * cs})
	cp(t, imgs[0], imgs[1], 8*cs)
	writeImage(t, imgs[2], n*cs+777, seed*3+3, region{kind: "text", off: 0, n: n*cs + 777})
	type snap struct {
		id, want string // want: a copy of the disk as backed up
	}
	var snaps []snap
	parents := make([]*VolumeManifest, len(imgs))
	for round := range 2 {
		for i, img := range imgs {
			if round == 1 {
				patch := filepath.Join(tmp, "patch")
				writeImage(t, patch, 3*cs, seed*7+uint64(i), region{kind: "random", off: 0, n: 3 * cs})
				f, _ := os.ReadFile(patch)
				g, _ := os.OpenFile(img, os.O_RDWR, 0)
				g.WriteAt(f, int64(4+i*5)*cs)
				g.Close()
			}
			id, vms, _ := backup(t, r, []string{img}, []*VolumeManifest{parents[i]})
			parents[i] = vms[0]
			want := filepath.Join(tmp, fmt.Sprintf("want-%d-%d", round, i))
			b, _ := os.ReadFile(img)
			if err := os.WriteFile(want, b, 0o600); err != nil {
				t.Fatal(err)
			}
			snaps = append(snaps, snap{id, want})
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// Seeded damage: a few files of each kind, a few bits each.
	var victims []string
	for _, sub := range []string{"data/*/*", "index/*", "snapshots/*"} {
		files, _ := filepath.Glob(filepath.Join(dir, sub))
		slices.Sort(files)
		rng.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
		victims = append(victims, files[:min(len(files), 1+rng.IntN(2))]...)
	}
	for _, f := range victims {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for range 1 + rng.IntN(4) {
			b[rng.IntN(len(b))] ^= 1 << rng.IntN(8)
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	r, err := Open(dir, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	rep, err := r.Verify(ctx)
	if err != nil {
		t.Fatalf("verify could not run: %v", err)
	}
	named := make(map[string]bool)
	for _, id := range rep.AffectedSnapshots {
		named[id] = true
	}
	if _, err := r.Repair(ctx); err != nil && !errors.Is(err, ErrBusy) {
		t.Fatalf("repair: %v", err)
	}
	// The servers' disks as they are now are backed up again: what was
	// quarantined is stored anew.
	var fresh []snap
	for i, img := range imgs {
		id, _, _ := backup(t, r, []string{img}, []*VolumeManifest{parents[i]})
		fresh = append(fresh, snap{id, img})
	}
	rep2, err := r.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	incomplete := make(map[string]bool)
	for _, d := range rep2.Incomplete {
		incomplete[d.Snapshot] = true
	}

	// The new backups are healthy whatever the damage: none deduplicated
	// against a damaged copy.
	for k, s := range fresh {
		sn, err := r.LoadSnapshot(ctx, s.id)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(tmp, fmt.Sprintf("fresh-%d", k))
		if err := restore(t, r, &sn.Volumes[0], out); err != nil {
			t.Fatalf("a backup made after verify cannot be restored: %v (damaged files %v)", err, victims)
		}
		if err := os.Truncate(out, sn.Volumes[0].Size); err != nil {
			t.Fatal(err)
		}
		if fileSum(t, out) != fileSum(t, s.want) {
			t.Fatalf("a backup made after verify restores other bytes")
		}
	}
	restored := 0
	for k, s := range snaps {
		out := filepath.Join(tmp, fmt.Sprintf("out-%d", k))
		var err error
		var vm *VolumeManifest
		sn, lerr := r.LoadSnapshot(ctx, s.id)
		if lerr == nil {
			vm = &sn.Volumes[0]
			err = restore(t, r, vm, out)
		} else {
			err = lerr
		}
		want, _ := os.ReadFile(s.want)
		if err == nil {
			restored++
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got[:min(len(got), len(want))], want) || len(got) < len(want) {
				t.Fatalf("snapshot %s restored with wrong bytes (damaged: %v %v)", s.id, named[s.id], victims)
			}
			if incomplete[s.id] {
				t.Errorf("repair names snapshot %s incomplete, yet it restored", s.id)
			}
			continue
		}
		if !named[s.id] {
			t.Fatalf("snapshot %s fails to restore (%v) but verify did not name it; report: %v", s.id, err, rep.Problems)
		}
		if !incomplete[s.id] {
			t.Errorf("snapshot %s fails to restore (%v) but repair does not name it incomplete", s.id, err)
		}
		// Whatever a failed restore wrote is the backup's bytes or zeros.
		if got, rerr := os.ReadFile(out); rerr == nil && vm != nil {
			for off := 0; off < len(got) && off < len(want); off += cs {
				g, w := got[off:min(off+cs, len(got), len(want))], want[off:min(off+cs, len(want))]
				if !bytes.Equal(g, w[:len(g)]) && !bytes.Equal(g, make([]byte, len(g))) {
					t.Fatalf("a failed restore of %s wrote wrong bytes at %d", s.id, off)
				}
			}
		}
	}
	t.Logf("seed %d: %d files damaged, verify named %d of %d snapshots, %d copies quarantined; after backing up again %d restore, %d incomplete",
		seed, len(victims), len(named), len(snaps), rep.Quarantined, restored, len(incomplete))
}
