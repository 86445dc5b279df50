// Package xfstest mounts a small XFS with reflink support on a loop device
// for the tests of the local compute driver (its clones and their extent
// maps need a file system that clones). It is used by tests only.
package xfstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Mount makes a 512 MiB XFS with reflink=1 in a temporary image file,
// loop-mounts it and returns the mount point, unmounted at the end of the
// test. Without root or mkfs.xfs (Debian: xfsprogs) the test is skipped,
// or fails when CSBS_REQUIRE_REFLINK=1 (scripts/test.sh as root sets it).
func Mount(t testing.TB) string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CSBS_REQUIRE_REFLINK") == "1" {
			t.Fatalf("reflink test cannot run and CSBS_REQUIRE_REFLINK=1: "+format, args...)
		}
		t.Skipf("reflink test skipped (set up root and xfsprogs to run it): "+format, args...)
	}
	if os.Geteuid() != 0 {
		unavailable("mounting a loop filesystem needs root")
	}
	mkfs, err := exec.LookPath("mkfs.xfs")
	if err != nil {
		unavailable("mkfs.xfs not found (Debian package xfsprogs)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		unavailable("mkfs.xfs: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		unavailable("mount -o loop: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	if !Reflink(mnt) {
		t.Fatalf("%s does not support reflink although mkfs.xfs -m reflink=1 made it", mnt)
	}
	return mnt
}

// Reflink reports whether files in dir can be reflink-cloned.
func Reflink(dir string) bool {
	src, err := os.CreateTemp(dir, "probe-")
	if err != nil {
		return false
	}
	defer os.Remove(src.Name())
	defer src.Close()
	src.Write([]byte("probe"))
	dst, err := os.CreateTemp(dir, "probe-")
	if err != nil {
		return false
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())) == nil
}
