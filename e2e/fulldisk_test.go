package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// smallFS loop-mounts a new ext4 file system of size bytes and returns its
// mount point (unmounted at the end of the test).
func smallFS(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CSBS_REQUIRE_FUSE") == "1" {
			t.Fatal("the full-disk test loop-mounts a file system and needs root")
		}
		t.Skip("the full-disk test loop-mounts a file system and needs root")
	}
	img := filepath.Join(t.TempDir(), "small.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", "-m", "0", img)
	mnt := t.TempDir()
	run(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	return mnt
}

// TestRepositoryFull backs up into a repository on a small file system
// until it is full: the backup that does not fit ends in error with a
// reason that says the repository is full, and fails within seconds; the
// service keeps serving; the earlier backup restores byte-exactly; once a
// backup is deleted and garbage collection ran, the backup that did not
// fit succeeds.
func TestRepositoryFull(t *testing.T) {
	fsDir := smallFS(t, 64*mib)
	e := newEnv(t, "--repository-url", "file://"+filepath.Join(fsDir, "repo"), "--repository-gc-margin", "1ms")
	a, b := serverID, newUUID()
	pa := e.addServer(a, project, "ACTIVE", 24*mib)
	pb := e.addServer(b, project, "ACTIVE", 40*mib)
	fillRandom(t, pa[0], 24*mib)
	fillRandom(t, pb[0], 40*mib)
	e.start()

	cpA, ia := e.protect(project, a, nil)
	e.waitStatus(project, ia, 60*time.Second, "available")
	start := time.Now()
	_, ib := e.protect(project, b, nil)
	it := e.waitStatus(project, ib, 60*time.Second, "available", "error")
	failedIn := time.Since(start)
	reason, _ := it["extend_info"].(map[string]any)["fail_reason"].(string)
	if it["status"] != "error" || !strings.HasPrefix(reason, "the repository is full") {
		t.Fatalf("a backup that does not fit ended %v: %q", it["status"], reason)
	}
	t.Logf("the backup that did not fit failed after %.1f s: %s", failedIn.Seconds(), reason)

	// The service goes on: lists answer, the earlier backup restores.
	if n := e.count(project, ""); n != 2 {
		t.Errorf("count %d after the failure, want 2", n)
	}
	want := hashes(t, pa)
	for _, p := range pa {
		scribble(t, p)
	}
	e.restoreOK(project, e.restoreBody(cpA, ia, a, false))
	sameHashes(t, "the backup made before the disk filled up", pa, want)

	// Delete the first backup; GC frees its space (and the failed
	// backup's leftovers); the backup that did not fit now does.
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cpA, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e.waitStatus(project, ia, 30*time.Second, "gone")
	deadline := time.Now().Add(30 * time.Second)
	var st syscall.Statfs_t
	for {
		syscall.Statfs(fsDir, &st)
		if free := int64(st.Bavail) * st.Bsize; free > 44*mib || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	_, ib2 := e.protect(project, b, nil)
	if it := e.waitStatus(project, ib2, 60*time.Second, "available", "error"); it["status"] != "available" {
		free := int64(st.Bavail) * st.Bsize
		t.Fatalf("after deleting a backup and GC (%s free) the backup ended %v: %v", fmt.Sprint(free>>20, " MiB"), it["status"], it["extend_info"])
	}
}
