package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/compute/local/xfstest"
)

func TestSnapshotLive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if xfstest.Reflink(dir) {
		t.Skipf("%s supports reflink; this test needs a filesystem without it", dir)
	}
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	writeImage(t, a, 4096, 'a')
	writeImage(t, b, 1000, 'b')
	d, _ := newInventory(t, dir, Inventory{Servers: []ServerSpec{
		server("s1", "p1", VolumeSpec{ID: "va", Name: "sys", Path: a}, VolumeSpec{ID: "vb", Path: b}),
	}})
	s, err := d.Server(ctx, "p1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if snap.CrashConsistent || snap.Method != "live" {
		t.Errorf("snapshot is %s, consistent %v; want live, not consistent", snap.Method, snap.CrashConsistent)
	}
	want := []struct {
		id, path string
		size     int64
		b        byte
	}{{"va", a, 4096, 'a'}, {"vb", b, 1000, 'b'}}
	if len(snap.Volumes) != len(want) {
		t.Fatalf("%d volumes, want %d", len(snap.Volumes), len(want))
	}
	for i, w := range want {
		v := snap.Volumes[i]
		if v.Volume.ID != w.id || v.Path != w.path || v.Size != w.size || v.Volume.Size != w.size {
			t.Errorf("volume %d = %+v, want id %s path %s size %d", i, v, w.id, w.path, w.size)
		}
		data, err := os.ReadFile(v.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, bytes.Repeat([]byte{w.b}, int(w.size))) {
			t.Errorf("volume %s reads other bytes", w.id)
		}
	}
	if err := snap.Release(); err != nil {
		t.Errorf("Release: %v", err)
	}
	if _, err := os.Stat(a); err != nil {
		t.Errorf("Release of a live snapshot touched the volume: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, SnapshotDirName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a live snapshot left %s behind (stat: %v)", SnapshotDirName, err)
	}
}

func TestSnapshotBadVolume(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.img")
	writeImage(t, good, 100, 'g')
	tests := []struct {
		name string
		path string
		want string
	}{
		{"missing", filepath.Join(dir, "missing.img"), "no such file"},
		{"directory", dir, "neither a regular file nor a block device"},
		{"character device", "/dev/null", "neither a regular file nor a block device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := newInventory(t, t.TempDir(), Inventory{Servers: []ServerSpec{
				server("s1", "p1", VolumeSpec{ID: "v-good", Path: good}, VolumeSpec{ID: "v-bad", Name: "data", Path: tt.path}),
			}})
			s, err := d.Server(ctx, "p1", "s1")
			if err != nil {
				t.Fatal(err)
			}
			snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{})
			if err == nil {
				snap.Release()
				t.Fatal("Snapshot succeeded, want a VolumeError")
			}
			var ve *compute.VolumeError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v (%T) is not a *compute.VolumeError", err, err)
			}
			if ve.VolumeID != "v-bad" || ve.Name != "data" || ve.Path != tt.path {
				t.Errorf("VolumeError names %s/%s/%s, want v-bad/data/%s", ve.VolumeID, ve.Name, ve.Path, tt.path)
			}
			if !strings.Contains(err.Error(), "disk data") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name the disk or say %q", err, tt.want)
			}
		})
	}
}

func TestSnapshotCanceled(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	writeImage(t, img, 10, 'a')
	d, _ := newInventory(t, dir, Inventory{Servers: []ServerSpec{server("s1", "p1", VolumeSpec{ID: "v", Path: img})}})
	s, err := d.Server(context.Background(), "p1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Snapshot(ctx, s, compute.SnapshotRequest{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Snapshot with a canceled context: %v", err)
	}
}

// TestSnapshotReflink takes a real reflink snapshot on a loop-mounted XFS
// filesystem, then overwrites the volumes and checks the clones kept the
// bytes of the moment of the snapshot.
func TestSnapshotReflink(t *testing.T) {
	ctx := context.Background()
	mnt := xfstest.Mount(t)
	const size = 8 << 20
	paths := []string{filepath.Join(mnt, "sys.img"), filepath.Join(mnt, "data.img")}
	before := make([][32]byte, len(paths))
	for i, p := range paths {
		before[i] = writeRandom(t, p, size)
	}
	// A symlinked volume is cloned next to its target.
	link := filepath.Join(t.TempDir(), "data-link.img")
	if err := os.Symlink(paths[1], link); err != nil {
		t.Fatal(err)
	}
	d, _ := newInventory(t, t.TempDir(), Inventory{Servers: []ServerSpec{
		server("s1", "p1", VolumeSpec{ID: "v-sys", Name: "sys", Path: paths[0], Bootable: true}, VolumeSpec{ID: "v-data", Path: link}),
	}})
	s, err := d.Server(ctx, "p1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	freeBefore := freeBytes(t, mnt)
	snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	// Two disks of a running server are cloned one after the other: frozen
	// per disk, but not at one instant, so not reported crash-consistent.
	if snap.CrashConsistent || snap.Method != "reflink-per-disk" {
		t.Fatalf("snapshot is %s, consistent %v; want reflink-per-disk, not consistent", snap.Method, snap.CrashConsistent)
	}
	stopped := s
	stopped.Status = "SHUTOFF"
	whole, err := d.Snapshot(ctx, stopped, compute.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !whole.CrashConsistent || whole.Method != "reflink" {
		t.Fatalf("snapshot of a stopped server is %s, consistent %v; want reflink, consistent", whole.Method, whole.CrashConsistent)
	}
	whole.Release()
	// Clones share the originals' extents: the snapshot costs (almost) no space.
	if used := freeBefore - freeBytes(t, mnt); used > size/4 {
		t.Errorf("the snapshot used %d bytes of space; clones should share extents, not copy %d bytes", used, 2*size)
	}
	for i, v := range snap.Volumes {
		if !strings.HasPrefix(v.Path, filepath.Join(mnt, SnapshotDirName)+"/") {
			t.Errorf("clone %s is not in %s", v.Path, filepath.Join(mnt, SnapshotDirName))
		}
		if v.Size != size || v.Volume.Size != size {
			t.Errorf("volume %d size %d/%d, want %d", i, v.Size, v.Volume.Size, size)
		}
		if fi, err := os.Stat(v.Path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("clone %s: %v, mode %v; want mode 0600", v.Path, err, fi.Mode())
		}
	}

	// Overwrite the originals in place (as a running VM would) and grow one.
	for i, p := range paths {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, size+i*4096)
		rand.Read(junk)
		if _, err := f.WriteAt(junk, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for i, v := range snap.Volumes {
		if got := hashFile(t, v.Path); got != before[i] {
			t.Errorf("clone of volume %d changed after the original was overwritten", i)
		}
		if got := hashFile(t, paths[i]); got == before[i] {
			t.Errorf("volume %d was not overwritten", i)
		}
	}

	// A second snapshot while the first lives is independent of it.
	snap2, err := d.Snapshot(ctx, s, compute.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := snap2.Volumes[1].Size; got != size+4096 {
		t.Errorf("second snapshot size %d, want %d", got, size+4096)
	}
	if err := snap2.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(snap.Volumes[0].Path); err != nil {
		t.Errorf("releasing one snapshot removed another's clone: %v", err)
	}

	if err := snap.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := snap.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
	for _, v := range snap.Volumes {
		if _, err := os.Stat(v.Path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("clone %s still exists after Release (stat: %v)", v.Path, err)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, SnapshotDirName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s still exists after the last Release (stat: %v)", SnapshotDirName, err)
	}
	for i, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("volume %d gone after Release: %v", i, err)
		}
	}
}

// TestSnapshotMixedFallsBackToLive has one volume that can be cloned and
// one that cannot: the snapshot must be live for both and leave no clone.
func TestSnapshotMixedFallsBackToLive(t *testing.T) {
	ctx := context.Background()
	mnt := xfstest.Mount(t)
	other := t.TempDir()
	if xfstest.Reflink(other) {
		t.Skipf("%s supports reflink; this test needs a filesystem without it", other)
	}
	a, b := filepath.Join(mnt, "a.img"), filepath.Join(other, "b.img")
	writeImage(t, a, 1<<20, 'a')
	writeImage(t, b, 1<<20, 'b')
	d, _ := newInventory(t, other, Inventory{Servers: []ServerSpec{
		server("s1", "p1", VolumeSpec{ID: "va", Path: a}, VolumeSpec{ID: "vb", Path: b}),
	}})
	s, err := d.Server(ctx, "p1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if snap.CrashConsistent || snap.Method != "live" {
		t.Errorf("snapshot is %s, consistent %v; want live, not consistent", snap.Method, snap.CrashConsistent)
	}
	if snap.Volumes[0].Path != a || snap.Volumes[1].Path != b {
		t.Errorf("live snapshot paths %s, %s; want the volumes", snap.Volumes[0].Path, snap.Volumes[1].Path)
	}
	for _, dir := range []string{mnt, other} {
		if _, err := os.Stat(filepath.Join(dir, SnapshotDirName)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the failed reflink attempt left %s in %s (stat: %v)", SnapshotDirName, dir, err)
		}
	}
}

// TestSnapshotBlockDevice backs a volume by a loop device: its size comes
// from the device, and the snapshot is live.
func TestSnapshotBlockDevice(t *testing.T) {
	ctx := context.Background()
	if os.Geteuid() != 0 {
		t.Skip("attaching a loop device needs root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	const size = 3 << 20
	writeImage(t, img, size, 'z')
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device available: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })

	d, _ := newInventory(t, t.TempDir(), Inventory{Servers: []ServerSpec{server("s1", "p1", VolumeSpec{ID: "v", Path: dev})}})
	s, err := d.Server(ctx, "p1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Volumes[0].Size; got != size {
		t.Errorf("block device size %d, want %d", got, size)
	}
	snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if snap.CrashConsistent || snap.Method != "live" || snap.Volumes[0].Path != dev || snap.Volumes[0].Size != size {
		t.Errorf("snapshot %s consistent %v path %s size %d; want live, not consistent, %s, %d",
			snap.Method, snap.CrashConsistent, snap.Volumes[0].Path, snap.Volumes[0].Size, dev, size)
	}
}

func TestRemoveStaleSnapshots(t *testing.T) {
	ctx := context.Background()
	mnt := xfstest.Mount(t)
	img := filepath.Join(mnt, "a.img")
	writeImage(t, img, 1<<20, 'a')
	d, _ := newInventory(t, t.TempDir(), Inventory{Servers: []ServerSpec{server("s1", "p1", VolumeSpec{ID: "v", Path: img})}})
	s, err := d.Server(ctx, "p1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	live, err := d.Snapshot(ctx, s, compute.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Release()
	if live.Method != "reflink" {
		t.Fatalf("snapshot is %s, want reflink", live.Method)
	}

	// Leftovers of a dead process: one with an unheld lock, one without a
	// lock file; and one that is too young to judge.
	base := filepath.Join(mnt, SnapshotDirName)
	old := time.Now().Add(-2 * staleAge)
	for _, name := range []string{"snap-dead", "snap-nolock", "snap-young"} {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		writeImage(t, filepath.Join(p, "0-a.img"), 10, 'x')
		if name == "snap-dead" {
			writeImage(t, filepath.Join(p, lockName), 0, 0)
		}
		if name != "snap-young" {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The live snapshot's directory is old too, but its lock is held.
	liveDir := filepath.Dir(live.Volumes[0].Path)
	if err := os.Chtimes(liveDir, old, old); err != nil {
		t.Fatal(err)
	}

	n, err := d.RemoveStaleSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("removed %d directories, want 2", n)
	}
	for name, want := range map[string]bool{"snap-dead": false, "snap-nolock": false, "snap-young": true, filepath.Base(liveDir): true} {
		_, err := os.Stat(filepath.Join(base, name))
		if exists := err == nil; exists != want {
			t.Errorf("%s exists = %v, want %v", name, exists, want)
		}
	}
	if got := hashFile(t, live.Volumes[0].Path); got != sha256.Sum256(bytes.Repeat([]byte{'a'}, 1<<20)) {
		t.Error("the live snapshot's clone was damaged")
	}
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bfree) * st.Bsize
}

func writeRandom(t *testing.T, path string, size int) [32]byte {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

func hashFile(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}
