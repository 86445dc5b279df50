package libvirt

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/nbd"
	"github.com/csbs/csbs/internal/repository"
)

// backedUp is a shut-off test domain whose disks hold known bytes, backed
// up, then overwritten: what instant recovery must bring back.
type backedUp struct {
	td    *testDomain
	repo  *repository.Repository
	m     map[string]*repository.VolumeManifest
	want  [2]string // the backup's bytes of vda and vdb, as raw files
	disks map[string]nbd.Disk
}

func newBackedUp(t *testing.T, d *Driver) *backedUp {
	t.Helper()
	ctx := context.Background()
	td := newDomain(t, d, "p1", false)
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 3M", "-c", "write -P 0x12 9M 1M", td.qcow2)
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x21 1M 2M", td.raw)
	srv, err := d.Server(ctx, "p1", td.id)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := d.Snapshot(ctx, srv, compute.SnapshotRequest{BackupID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	b := &backedUp{td: td, repo: newRepo(t)}
	dir := t.TempDir()
	b.want = [2]string{filepath.Join(dir, "vda.raw"), filepath.Join(dir, "vdb.raw")}
	dump(t, volume(t, snap, td.volIDs[0]), b.want[0])
	dump(t, volume(t, snap, td.volIDs[1]), b.want[1])
	b.m, _, _ = backupAll(t, b.repo, snap, nil)
	snap.Release()
	// The disks are lost: every byte overwritten, the holes too.
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xee 0 32M", td.qcow2)
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0xee 0 16M", td.raw)
	b.disks = map[string]nbd.Disk{}
	for _, id := range td.volIDs {
		r, err := b.repo.OpenVolume(ctx, b.m[id], 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		b.disks[id] = nbd.VolumeDisk{VolumeReader: r}
	}
	return b
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func (td *testDomain) state(t *testing.T) golibvirt.DomainState {
	t.Helper()
	l, err := td.d.conn()
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := l.DomainGetState(td.dom, 0)
	if err != nil {
		t.Fatal(err)
	}
	return golibvirt.DomainState(st)
}

// sources returns the disk files of the domain's live (or, inactive, its
// persistent) definition.
func (td *testDomain) sources(t *testing.T, inactive bool) []string {
	t.Helper()
	l, err := td.d.conn()
	if err != nil {
		t.Fatal(err)
	}
	var fl golibvirt.DomainXMLFlags
	if inactive {
		fl = golibvirt.DomainXMLInactive
	}
	doc, err := l.DomainGetXMLDesc(td.dom, fl)
	if err != nil {
		t.Fatal(err)
	}
	pd, err := parseDomain(doc, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range pd.disks {
		out = append(out, k.format+":"+k.file)
	}
	return out
}

// stopGracefully ends the domain's QEMU with a flush (SIGTERM), so that
// its images are complete on disk.
func (td *testDomain) stopGracefully(t *testing.T) {
	t.Helper()
	l, err := td.d.conn()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.DomainDestroyFlags(td.dom, golibvirt.DomainDestroyGraceful); err != nil {
		t.Fatal(err)
	}
}

// TestInstantRecovery: a domain whose disks were overwritten is started
// from its backup (it must be stopped first: refused while it runs without
// Stop), runs from the backup while the copy is still going, and the
// guest's writes made before the copy, during it and once it is in sync
// all end up on the real disks, which otherwise equal the backup byte for
// byte (holes included). The exports and overlays are gone, no block job
// is left, and both definitions name the real disks.
func TestInstantRecovery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, "")
	b := newBackedUp(t, d)
	td := b.td
	td.start(t)
	real := []string{"qcow2:" + td.qcow2, "raw:" + td.raw}

	err := d.InstantRecover(ctx, td.id, InstantRecovery{Disks: b.disks})
	if err == nil || !strings.Contains(err.Error(), "ACTIVE") || !strings.Contains(err.Error(), "--stop") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("instant recovery of a running domain without Stop: %v; want refused, naming its state and --stop", err)
	}
	if st := td.state(t); st != golibvirt.DomainRunning {
		t.Fatalf("a refused instant recovery left the domain in state %d", st)
	}

	l, err := d.conn()
	if err != nil {
		t.Fatal(err)
	}
	var phases []InstantPhase
	var dir string
	progress := func(p InstantProgress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
		dir = p.Dir
		switch p.Phase {
		case InstantRunning:
			if st := td.state(t); st != golibvirt.DomainRunning {
				t.Errorf("running from the backup: domain state %d", st)
			}
			live := td.sources(t, false)
			if !slices.Equal(live, []string{"qcow2:" + p.Disks[0].Overlay, "qcow2:" + p.Disks[1].Overlay}) {
				t.Errorf("running from the backup on disks %v, want the overlays", live)
			}
			if got := td.sources(t, true); !slices.Equal(got, real) {
				t.Errorf("persistent definition while running from the backup: %v, want %v", got, real)
			}
			td.write(t, 0, "write -P 0x55 0 4k") // onto data of the backup
		case InstantCopying:
			if slices.Contains(phases[:len(phases)-1], InstantCopying) {
				return
			}
			// The first report of a copy not yet in sync (1 MiB/s: the
			// disks take many seconds): the guest runs and writes on.
			if st := td.state(t); st != golibvirt.DomainRunning {
				t.Errorf("while the copy goes on: domain state %d", st)
			}
			td.write(t, 0, "write -P 0x66 20M 4k") // into a hole of the backup
			td.write(t, 1, "write -P 0x77 15M 4k")
			for _, k := range p.Disks {
				if err := l.DomainBlockJobSetSpeed(td.dom, k.Target, 0, 0); err != nil {
					t.Errorf("lift the copy's bandwidth limit: %v", err)
				}
			}
		case InstantReady:
			for _, k := range p.Disks {
				if k.Total == 0 || k.Done != k.Total {
					t.Errorf("ready with disk %s at %d of %d", k.Target, k.Done, k.Total)
				}
			}
			td.write(t, 0, "write -P 0x88 24M 4k") // mirrored to both sides
		}
	}
	if err := d.InstantRecover(ctx, td.id, InstantRecovery{Disks: b.disks, Stop: true, Bandwidth: mib,
		PollInterval: 100 * time.Millisecond, Progress: progress}); err != nil {
		t.Fatalf("instant recovery: %v\n%s", err, td.qemuLog())
	}
	if want := []InstantPhase{InstantRunning, InstantCopying, InstantReady, InstantDone}; !slices.Equal(phases, want) {
		t.Errorf("phases %v, want %v", phases, want)
	}
	if st := td.state(t); st != golibvirt.DomainRunning {
		t.Errorf("after instant recovery: domain state %d, want running", st)
	}
	if got := td.sources(t, false); !slices.Equal(got, real) {
		t.Errorf("after the switch the domain runs on %v, want %v", got, real)
	}
	if got := td.sources(t, true); !slices.Equal(got, real) {
		t.Errorf("persistent definition after instant recovery: %v, want %v", got, real)
	}
	for _, target := range []string{"vda", "vdb"} {
		if found, _, _, _, _, err := l.DomainGetBlockJobInfo(td.dom, target, 0); err != nil || found != 0 {
			t.Errorf("block job of %s after the switch: found %d, %v", target, found, err)
		}
	}
	if _, err := os.Stat(dir); dir == "" || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the exports' and overlays' directory %q is still there (%v)", dir, err)
	}
	td.stopGracefully(t)
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4k", "-c", "write -P 0x66 20M 4k", "-c", "write -P 0x88 24M 4k", b.want[0])
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x77 15M 4k", b.want[1])
	run(t, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", td.qcow2, b.want[0])
	run(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", td.raw, b.want[1])
	if got := checkpoints(t, td); len(got) != 0 {
		t.Errorf("checkpoints %v survive an instant recovery", got)
	}
}

// TestInstantRecoveryInterrupted: an instant recovery cancelled while its
// copy goes on (Ctrl-C) ends the transient run and leaves the domain shut
// off with its definition unchanged, the exports and overlays removed, and
// says which disks are half-written and what to do; a second run then
// brings the backup back whole.
func TestInstantRecoveryInterrupted(t *testing.T) {
	t.Parallel()
	d := newDriver(t, "")
	b := newBackedUp(t, d)
	td := b.td
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dir string
	err := d.InstantRecover(ctx, td.id, InstantRecovery{Disks: b.disks, Bandwidth: mib, PollInterval: 100 * time.Millisecond,
		Progress: func(p InstantProgress) {
			dir = p.Dir
			if p.Phase == InstantCopying {
				cancel()
			}
		}})
	if err == nil {
		t.Fatal("an instant recovery cancelled during its copy succeeded")
	}
	for _, want := range []string{"did not finish", "context canceled", "shut off, its definition unchanged", td.qcow2, td.raw, "restore", "lost"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if st := td.state(t); st != golibvirt.DomainShutoff {
		t.Errorf("after an interrupted instant recovery: domain state %d, want shut off", st)
	}
	if got, want := td.sources(t, true), []string{"qcow2:" + td.qcow2, "raw:" + td.raw}; !slices.Equal(got, want) {
		t.Errorf("definition after an interrupted instant recovery: %v, want %v", got, want)
	}
	if _, err := os.Stat(dir); dir == "" || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the exports' and overlays' directory %q is still there (%v)", dir, err)
	}

	if err := d.InstantRecover(context.Background(), td.id, InstantRecovery{Disks: b.disks, PollInterval: 100 * time.Millisecond}); err != nil {
		t.Fatalf("instant recovery after an interrupted one: %v\n%s", err, td.qemuLog())
	}
	td.stopGracefully(t)
	run(t, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", td.qcow2, b.want[0])
	run(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", td.raw, b.want[1])
}

// memDisk is a disk of zeros of some size.
type memDisk int64

func (m memDisk) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }
func (m memDisk) Size() int64                             { return int64(m) }
func (m memDisk) Extents(off, n int64) []nbd.Extent {
	return []nbd.Extent{{Off: off, Len: min(n, int64(m)-off), Flags: nbd.StateHole | nbd.StateZero}}
}

// TestInstantRecoveryRefused: what instant recovery cannot do is refused
// before anything changes, with an error that names what is wrong.
func TestInstantRecoveryRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, "")
	td := newDomain(t, d, "p1", false)
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x21 0 1M", td.raw)
	before := [2][32]byte{fileHash(t, td.qcow2), fileHash(t, td.raw)}
	other := VolumeID("00000000-0000-0000-0000-000000000001", "vda")
	for _, tc := range []struct {
		name  string
		disks map[string]nbd.Disk
		want  []string
	}{
		{"no disk", map[string]nbd.Disk{}, []string{"no disk"}},
		{"a disk of another domain", map[string]nbd.Disk{other: memDisk(32 * mib)}, []string{other, "not a disk of the domain", td.volIDs[0]}},
		{"another size", map[string]nbd.Disk{td.volIDs[1]: memDisk(8 * mib)}, []string{"vdb", td.raw, "16777216 bytes", "8388608"}},
	} {
		err := d.InstantRecover(ctx, td.id, InstantRecovery{Disks: tc.disks})
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range append(tc.want, "nothing was changed", td.name) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
	}
	if err := d.InstantRecover(ctx, "6a3e5f2c-0000-4000-8000-000000000000", InstantRecovery{Disks: map[string]nbd.Disk{other: memDisk(mib)}}); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("instant recovery of a domain that does not exist: %v, want not found", err)
	}
	if st := td.state(t); st != golibvirt.DomainShutoff {
		t.Errorf("refusals left the domain in state %d", st)
	}
	if after := ([2][32]byte{fileHash(t, td.qcow2), fileHash(t, td.raw)}); after != before {
		t.Error("a refused instant recovery changed a disk")
	}
}
