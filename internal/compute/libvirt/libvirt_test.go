package libvirt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/repository"
)

// These tests run QEMU/KVM domains under a real libvirtd (qemu:///system).
// They skip with a message where there is none, and fail instead when
// CSBS_REQUIRE_LIBVIRT is set (scripts/test.sh as root installs and starts
// libvirt and sets it). The domains have no guest OS: the guest's writes
// are made through the QEMU monitor (qemu-io on the disk's backend).

const mib = 1 << 20

func newDriver(t *testing.T, defaultProject string) *Driver {
	t.Helper()
	require := os.Getenv("CSBS_REQUIRE_LIBVIRT") != ""
	skip := func(format string, args ...any) {
		t.Helper()
		if require {
			t.Fatalf(format+" (CSBS_REQUIRE_LIBVIRT is set)", args...)
		}
		t.Skipf(format+"; scripts/test.sh as root installs and starts libvirt", args...)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		skip("no KVM: %v", err)
	}
	for _, tool := range []string{"qemu-img", "qemu-nbd", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip("%s is not installed (Debian: qemu-utils)", tool)
		}
	}
	d, err := New(Config{DefaultProject: defaultProject, ScratchDir: filepath.Join(os.TempDir(), "csbs-libvirt-test"), ShutdownTimeout: time.Second})
	if err != nil {
		skip("libvirt is not reachable: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// testDomain is a domain with a qcow2 disk (vda) and a raw disk (vdb).
type testDomain struct {
	d      *Driver
	name   string
	id     string
	dom    golibvirt.Domain
	qcow2  string
	raw    string
	volIDs [2]string
}

// newDomain defines (and starts, when running) a domain of project
// ("": no csbs metadata).
func newDomain(t *testing.T, d *Driver, project string, running bool) *testDomain {
	t.Helper()
	var rnd [6]byte
	rand.Read(rnd[:])
	name := "csbs-test-" + hex.EncodeToString(rnd[:])
	dir := t.TempDir()
	td := &testDomain{d: d, name: name, qcow2: filepath.Join(dir, "sys.qcow2"), raw: filepath.Join(dir, "data.raw")}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", td.qcow2, "32M")
	run(t, "qemu-img", "create", "-q", "-f", "raw", td.raw, "16M")
	meta := ""
	if project != "" {
		meta = `<metadata><csbs:server xmlns:csbs="urn:csbs:server:1" project_id="` + project + `"/></metadata>`
	}
	doc := fmt.Sprintf(`<domain type='kvm'><name>%s</name>%s<memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
<devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='%s'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>`, name, meta, td.qcow2, td.raw)
	l, err := d.conn()
	if err != nil {
		t.Fatal(err)
	}
	td.dom, err = l.DomainDefineXML(doc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l, err := d.conn()
		if err != nil {
			return
		}
		l.DomainDestroy(td.dom)
		if err := l.DomainUndefineFlags(td.dom, golibvirt.DomainUndefineCheckpointsMetadata); err != nil {
			t.Logf("undefine %s: %v", name, err)
		}
	})
	td.id = uuidString(td.dom.UUID)
	td.volIDs = [2]string{VolumeID(td.id, "vda"), VolumeID(td.id, "vdb")}
	if running {
		td.start(t)
	}
	return td
}

func uuidString(u golibvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (td *testDomain) start(t *testing.T) {
	t.Helper()
	l, err := td.d.conn()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.DomainCreate(td.dom); err != nil {
		t.Fatal(err)
	}
}

// qemuLog returns the end of the domain's QEMU log, which says why QEMU
// exited when a test finds its domain gone (seen once in CI: "domain is not
// running" right after a start).
func (td *testDomain) qemuLog() string {
	b, err := os.ReadFile(filepath.Join("/var/log/libvirt/qemu", td.name+".log"))
	if err != nil {
		return err.Error()
	}
	return string(b[max(0, len(b)-2048):])
}

// write makes the guest write: qemu-io on disk (0 = vda, 1 = vdb) of the
// running domain, e.g. "write -P 0xab 1M 64k".
func (td *testDomain) write(t *testing.T, disk int, cmd string) {
	t.Helper()
	l, err := td.d.conn()
	if err != nil {
		t.Fatal(err)
	}
	hmp := fmt.Sprintf(`qemu-io -d /machine/peripheral/virtio-disk%d/virtio-backend "%s"`, disk, cmd)
	out, err := l.QEMUDomainMonitorCommand(td.dom, hmp, 1)
	if err != nil || strings.Contains(strings.ToLower(out), "error") || strings.Contains(out, "failed") {
		t.Fatalf("%s: %v %s", hmp, err, out)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// backupAll backs up every volume of snap as the service does (allocated
// and changed extents, checked, then the repository) and commits.
func backupAll(t *testing.T, repo *repository.Repository, snap *compute.Snapshot, parent map[string]*repository.VolumeManifest) (map[string]*repository.VolumeManifest, map[string]repository.VolumeStats, map[string]compute.Changes) {
	t.Helper()
	out, stats, changes, err := backupVolumes(context.Background(), repo, snap, parent)
	if err != nil {
		t.Fatal(err)
	}
	return out, stats, changes
}

// tryBackupAll is backupAll for a backup that may fail.
func tryBackupAll(ctx context.Context, repo *repository.Repository, snap *compute.Snapshot, parent map[string]*repository.VolumeManifest) (map[string]*repository.VolumeManifest, error) {
	out, _, _, err := backupVolumes(ctx, repo, snap, parent)
	return out, err
}

func backupVolumes(ctx context.Context, repo *repository.Repository, snap *compute.Snapshot, parent map[string]*repository.VolumeManifest) (map[string]*repository.VolumeManifest, map[string]repository.VolumeStats, map[string]compute.Changes, error) {
	b := repo.NewBackup()
	defer b.Abort()
	out := map[string]*repository.VolumeManifest{}
	stats := map[string]repository.VolumeStats{}
	changes := map[string]compute.Changes{}
	var rs repository.Snapshot
	for _, sv := range snap.Volumes {
		alloc, err := sv.Reader.Allocated(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := compute.CheckExtents(alloc, sv.Size); err != nil {
			return nil, nil, nil, fmt.Errorf("allocated extents: %w", err)
		}
		ch, err := sv.Reader.Changed(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := compute.CheckExtents(ch.Extents, sv.Size); err != nil {
			return nil, nil, nil, fmt.Errorf("changed extents: %w", err)
		}
		src := repository.Source{Name: sv.Volume.Name, Data: sv.Reader, Size: sv.Size, ChangesKnown: ch.Known}
		for _, e := range alloc {
			src.Allocated = append(src.Allocated, repository.Range{Off: e.Off, Len: e.Len})
		}
		for _, e := range ch.Extents {
			src.Changed = append(src.Changed, repository.Range{Off: e.Off, Len: e.Len})
		}
		vm, st, err := b.VolumeFrom(ctx, src, parent[sv.Volume.ID], nil)
		if err != nil {
			return nil, nil, nil, err
		}
		vm.VolumeID, vm.Name = sv.Volume.ID, sv.Volume.Name
		rs.Volumes = append(rs.Volumes, *vm)
		out[sv.Volume.ID], stats[sv.Volume.ID], changes[sv.Volume.ID] = vm, st, ch
	}
	if _, err := b.Commit(ctx, &rs); err != nil {
		return nil, nil, nil, err
	}
	return out, stats, changes, nil
}

func newRepo(t *testing.T) *repository.Repository {
	t.Helper()
	r, err := repository.Init(filepath.Join(t.TempDir(), "repo"), []byte("test password"),
		repository.Options{ChunkSize: mib, PackSize: 4 * mib, Workers: 2, KDFTime: 1, KDFMemoryKiB: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func checkpoints(t *testing.T, td *testDomain) []string {
	t.Helper()
	l, err := td.d.conn()
	if err != nil {
		t.Fatal(err)
	}
	cps, _, err := l.DomainListAllCheckpoints(td.dom, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, cp := range cps {
		names = append(names, cp.Name)
	}
	slices.Sort(names)
	return names
}

// dump copies a snapshot volume's guest-visible bytes into a raw file.
func dump(t *testing.T, sv compute.SnapshotVolume, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, io.NewSectionReader(sv.Reader, 0, sv.Size)); err != nil {
		t.Fatal(err)
	}
}

func volume(t *testing.T, snap *compute.Snapshot, id string) compute.SnapshotVolume {
	t.Helper()
	for _, sv := range snap.Volumes {
		if sv.Volume.ID == id {
			return sv
		}
	}
	t.Fatalf("snapshot has no volume %s", id)
	return compute.SnapshotVolume{}
}

// TestBackupIncrementalRestore: a full backup, guest writes, an incremental
// that reads only the written extents of the qcow2 disk (and the raw disk
// whole, saying why), old checkpoints dropped; a restore that writes the
// guest-visible bytes back (qemu-img compare) and drops the checkpoints, so
// the backup after it is full.
func TestBackupIncrementalRestore(t *testing.T) {
	t.Parallel()
	d := newDriver(t, "")
	ctx := context.Background()
	td := newDomain(t, d, "p1", true)
	repo := newRepo(t)
	td.write(t, 0, "write -P 0x11 0 3M")
	td.write(t, 1, "write -P 0x22 2M 64k")

	srv, err := d.Server(ctx, "p1", td.id)
	if err != nil {
		t.Fatal(err)
	}
	snap1, err := d.Snapshot(ctx, srv, compute.SnapshotRequest{BackupID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	if !snap1.CrashConsistent || snap1.Method != "libvirt-backup" || snap1.Token != CheckpointName("b1") {
		t.Errorf("snapshot: consistent %v, method %s, token %q", snap1.CrashConsistent, snap1.Method, snap1.Token)
	}
	m1, st1, ch1 := backupAll(t, repo, snap1, nil)
	snap1.Release()
	if ch1[td.volIDs[0]].Known {
		t.Error("the first backup claims known changes")
	}
	if got := st1[td.volIDs[0]].ReadBytes; got != 3*mib {
		t.Errorf("full backup of vda read %d bytes, want the 3 MiB written (holes skipped)", got)
	}

	td.write(t, 0, "write -P 0xab 5M 64k")
	td.write(t, 0, "write -P 0xac 20M 4k")
	td.write(t, 1, "write -P 0xcd 3M 4k")
	snap2, err := d.Snapshot(ctx, srv, compute.SnapshotRequest{BackupID: "b2", Parent: &compute.Parent{BackupID: "b1", Token: snap1.Token}})
	if err != nil {
		t.Fatal(err)
	}
	want := t.TempDir()
	dump(t, volume(t, snap2, td.volIDs[0]), filepath.Join(want, "vda.raw"))
	dump(t, volume(t, snap2, td.volIDs[1]), filepath.Join(want, "vdb.raw"))
	m2, st2, ch2 := backupAll(t, repo, snap2, m1)
	snap2.Release()
	vda, vdb := ch2[td.volIDs[0]], ch2[td.volIDs[1]]
	if !vda.Known || !slices.Equal(vda.Extents, []compute.Extent{{Off: 5 * mib, Len: 64 << 10}, {Off: 20 * mib, Len: 64 << 10}}) {
		t.Errorf("vda changes %+v, want known: the two written 64 KiB clusters", vda)
	}
	if got := st2[td.volIDs[0]].ReadBytes; got != 2*mib {
		t.Errorf("incremental of vda read %d bytes, want the 2 chunks of 1 MiB holding the writes", got)
	}
	if vdb.Known || !strings.Contains(vdb.Reason, "raw") {
		t.Errorf("raw vdb changes %+v, want unknown because raw", vdb)
	}
	if got := checkpoints(t, td); !slices.Equal(got, []string{"csbs-b1", "csbs-b2"}) {
		t.Errorf("checkpoints after the second backup %v, want b1 (its parent) and b2", got)
	}

	// A third backup drops b1: only its parent b2 and itself are kept.
	snap3, err := d.Snapshot(ctx, srv, compute.SnapshotRequest{BackupID: "b3", Parent: &compute.Parent{BackupID: "b2", Token: CheckpointName("b2")}})
	if err != nil {
		t.Fatal(err)
	}
	_, st3, _ := backupAll(t, repo, snap3, m2)
	snap3.Release()
	if got := st3[td.volIDs[0]].ReadBytes; got != 0 {
		t.Errorf("an incremental without writes read %d bytes of vda", got)
	}
	if got := checkpoints(t, td); !slices.Equal(got, []string{"csbs-b2", "csbs-b3"}) {
		t.Errorf("checkpoints after the third backup %v, want b2 and b3", got)
	}

	// Scribble, then restore b2.
	td.write(t, 0, "write -P 0xee 0 8M")
	td.write(t, 1, "write -P 0xee 0 8M")
	rs, err := d.Restore(ctx, srv)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkpoints(t, td); len(got) != 0 {
		t.Errorf("checkpoints %v survive a restore", got)
	}
	for _, id := range td.volIDs {
		w, err := rs.Open(ctx, compute.Volume{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.RestoreVolumeTo(ctx, m2[id], w, id, nil); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", td.qcow2, filepath.Join(want, "vda.raw"))
	run(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", td.raw, filepath.Join(want, "vdb.raw"))
	if err := rs.Finish(ctx, true); err != nil {
		t.Fatal(err)
	}
	if s, err := d.Server(ctx, "p1", td.id); err != nil || s.Status != "ACTIVE" {
		t.Fatalf("after a restore with power on: %s, %v", s.Status, err)
	}

	// The restore invalidated b3's checkpoint: the next backup reads all.
	snap4, err := d.Snapshot(ctx, srv, compute.SnapshotRequest{BackupID: "b4", Parent: &compute.Parent{BackupID: "b3", Token: CheckpointName("b3")}})
	if err != nil {
		t.Fatal(err)
	}
	_, st4, ch4 := backupAll(t, repo, snap4, m2)
	snap4.Release()
	if c := ch4[td.volIDs[0]]; c.Known || !strings.Contains(c.Reason, "gone") {
		t.Errorf("backup after a restore: changes %+v, want unknown: the checkpoint is gone", c)
	}
	if got := st4[td.volIDs[0]].ReadBytes; got != 5*mib {
		t.Errorf("backup after a restore read %d bytes of vda, want every allocated chunk (5 MiB: 3 + two of 1 MiB)", got)
	}
	if out := run(t, "qemu-img", "info", "-U", td.qcow2); strings.Contains(out, "csbs-b2") || strings.Contains(out, "csbs-b3") {
		t.Errorf("the restore left the bitmaps of dropped checkpoints in the image:\n%s", out)
	}
}

// TestProjects: the project of a domain comes from its metadata, else the
// default project; others' domains are not found.
func TestProjects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tt := range []struct {
		name        string
		defaultProj string
		meta        string
		visibleIn   string // "" = invisible everywhere
	}{
		{"metadata names the project", "", "p1", "p1"},
		{"another project's domain", "", "other", "other"},
		{"no metadata, no default project: invisible", "", "", ""},
		{"no metadata: the default project", "dflt", "", "dflt"},
		{"metadata wins over the default", "dflt", "p1", "p1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDriver(t, tt.defaultProj)
			td := newDomain(t, d, tt.meta, false)
			for _, p := range []string{"p1", "other", "dflt"} {
				_, err := d.Server(ctx, p, td.id)
				list, lerr := d.Servers(ctx, p)
				if lerr != nil {
					t.Fatal(lerr)
				}
				listed := slices.ContainsFunc(list, func(s compute.Server) bool { return s.ID == td.id })
				if p == tt.visibleIn {
					if err != nil || !listed {
						t.Errorf("project %s: Server %v, listed %v; want found", p, err, listed)
					}
				} else if !errors.Is(err, compute.ErrNotFound) || listed {
					t.Errorf("project %s: Server %v, listed %v; want ErrNotFound and not listed", p, err, listed)
				}
			}
		})
	}
}

// TestServerModel: a domain as a server: ids, sizes as the guest sees
// them, boot disk, state.
func TestServerModel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, "")
	td := newDomain(t, d, "p1", false)
	s, err := d.Server(ctx, "p1", td.id)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != td.id || s.Name != td.name || s.Status != "SHUTOFF" || s.VCPUs != 1 || s.RAM != 64 || len(s.Volumes) != 2 {
		t.Fatalf("server %+v", s)
	}
	for i, w := range []struct {
		id   string
		size int64
		boot bool
	}{{td.volIDs[0], 32 * mib, true}, {td.volIDs[1], 16 * mib, false}} {
		v := s.Volumes[i]
		if v.ID != w.id || v.Size != w.size || v.Bootable != w.boot {
			t.Errorf("volume %d = %+v, want id %s size %d bootable %v", i, v, w.id, w.size, w.boot)
		}
	}
	td.start(t)
	if s, err := d.Server(ctx, "p1", td.id); err != nil || s.Status != "ACTIVE" {
		t.Errorf("running domain: %s, %v; want ACTIVE", s.Status, err)
	}
}

// TestShutOffDomain: a shut-off domain's disks are read through qemu-nbd as
// the guest sees them (not the qcow2 container), changes unknown, no
// checkpoint.
func TestShutOffDomain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, "")
	td := newDomain(t, d, "p1", false)
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 7M 128k", td.qcow2)
	s, err := d.Server(ctx, "p1", td.id)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "x", Parent: &compute.Parent{BackupID: "w", Token: CheckpointName("w")}})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if snap.Method != "qemu-nbd" || !snap.CrashConsistent || snap.Token != "" {
		t.Errorf("snapshot: method %s, consistent %v, token %q", snap.Method, snap.CrashConsistent, snap.Token)
	}
	sv := volume(t, snap, td.volIDs[0])
	if sv.Size != 32*mib {
		t.Errorf("size %d, want the guest's 32 MiB", sv.Size)
	}
	got := make([]byte, 256<<10)
	if _, err := sv.Reader.ReadAt(got, 7*mib-64<<10); err != nil {
		t.Fatal(err)
	}
	want := append(make([]byte, 64<<10), bytes.Repeat([]byte{0x5a}, 128<<10)...)
	want = append(want, make([]byte, 64<<10)...)
	if !bytes.Equal(got, want) {
		t.Error("guest-visible bytes differ from what was written")
	}
	alloc, err := sv.Reader.Allocated(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range alloc {
		n += e.Len
	}
	if n != 128<<10 {
		t.Errorf("allocated %v (%d bytes), want only the 128 KiB written", alloc, n)
	}
	if ch, err := sv.Reader.Changed(ctx); err != nil || ch.Known {
		t.Errorf("changes %+v, %v; want unknown", ch, err)
	}
}

// TestStaleBackupJob: a backup job left behind by a csbs process that died
// (its scratch directory unlocked) is ended by the next backup, which then
// runs; a job of a live owner is not touched.
func TestStaleBackupJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, "")
	td := newDomain(t, d, "p1", true)
	l, err := d.conn()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(d.cfg.ScratchDir, "backup-")
	if err != nil {
		t.Fatal(err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := []plan{{disk: disk{target: "vda", format: "qcow2"}}, {disk: disk{target: "vdb", format: "raw"}}}
	if err := l.DomainBackupBegin(td.dom, backupXML(filepath.Join(dir, "nbd.sock"), dir, p), nil, 0); err != nil {
		t.Fatalf("backup begin: %v\n%s", err, td.qemuLog())
	}
	s, err := d.Server(ctx, "p1", td.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "b1"}); err == nil || !strings.Contains(err.Error(), "another backup job is running") {
		t.Fatalf("backup while a live owner's job runs: %v; want refused, saying why", err)
	}
	lock.Close() // its owner dies
	snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "b1"})
	if err != nil {
		t.Fatalf("backup after a dead owner's job: %v", err)
	}
	snap.Release()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the stale job's directory is still there (%v)", err)
	}
}

// TestDomainRedefined: a shut-off domain undefined and defined again (same
// UUID) has lost its checkpoints: the next backup reads all, saying why.
// (A running domain keeps them across a redefinition, and its bitmaps stay
// exact: QEMU never stopped tracking.)
func TestDomainRedefined(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, "")
	td := newDomain(t, d, "p1", true)
	s, err := d.Server(ctx, "p1", td.id)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	snap.Release()
	l, err := d.conn()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := l.DomainGetXMLDesc(td.dom, golibvirt.DomainXMLInactive)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.DomainDestroy(td.dom); err != nil {
		t.Fatal(err)
	}
	if err := l.DomainUndefineFlags(td.dom, golibvirt.DomainUndefineCheckpointsMetadata); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DomainDefineXML(doc); err != nil {
		t.Fatal(err)
	}
	td.start(t)
	snap, err = d.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "b2", Parent: &compute.Parent{BackupID: "b1", Token: CheckpointName("b1")}})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	ch, err := volume(t, snap, td.volIDs[0]).Reader.Changed(ctx)
	if err != nil || ch.Known || !strings.Contains(ch.Reason, "gone") {
		t.Errorf("changes after a redefinition %+v, %v; want unknown: the checkpoint is gone", ch, err)
	}
}

// TestImageSize: the size the guest sees, read from the image: a qcow2's
// virtual size, a raw file's length; anything else is an error (the
// caller then asks libvirt).
func TestImageSize(t *testing.T) {
	dir := t.TempDir()
	qcow2, raw, text := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.raw"), filepath.Join(dir, "c.txt")
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (Debian: qemu-utils)")
	}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow2, "48M")
	run(t, "qemu-img", "create", "-q", "-f", "raw", raw, "20M")
	os.WriteFile(text, []byte("not an image, but long enough to have a header"), 0o600)
	for _, tc := range []struct {
		file, format string
		want         int64
		fails        bool
	}{
		{qcow2, "qcow2", 48 * mib, false},
		{raw, "raw", 20 * mib, false},
		{text, "qcow2", 0, true},
		{qcow2, "vmdk", 0, true},
		{filepath.Join(dir, "missing"), "raw", 0, true},
	} {
		got, err := imageSize(tc.file, tc.format)
		if (err != nil) != tc.fails || got != tc.want {
			t.Errorf("imageSize(%s, %s) = %d, %v; want %d (fails %v)", filepath.Base(tc.file), tc.format, got, err, tc.want, tc.fails)
		}
	}
}
