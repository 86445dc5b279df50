package e2e

import (
	mrand "math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeleteAndGC deletes a backup: DELETE answers 200 at once, the backup
// shows "deleting" until it goes away (404), repeated DELETEs meanwhile are
// refused with 400 CSBS.2003 and change nothing (the Terraform provider's
// delete loop reads that as "still deleting"), the other backup stays, and
// garbage collection gives the space of its unique data back.
func TestDeleteAndGC(t *testing.T) {
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 32*mib)
	e.start()

	_, keep := e.protect(project, serverID, nil)
	e.waitStatus(project, keep, 60*time.Second, "available")

	// New random data only the second backup has.
	f, _ := os.OpenFile(paths[0], os.O_WRONLY, 0)
	block := make([]byte, 12*mib)
	for i := range block {
		block[i] = byte(randInt(256))
	}
	f.WriteAt(block, 4*mib)
	f.Close()
	cp, drop := e.protect(project, serverID, nil)
	e.waitStatus(project, drop, 60*time.Second, "available")
	before := e.repoBytes()

	path := "/v1/" + project + "/providers/" + provider + "/checkpoints/" + cp
	r := e.do("DELETE", path, nil)
	if r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	// Like the Terraform provider: GET, and DELETE again while it still exists.
	for {
		it := e.item(project, drop)
		if it == nil {
			break
		}
		if it["status"] != "deleting" {
			t.Fatalf("a backup being deleted shows %v; the Terraform provider accepts only deleting", it["status"])
		}
		r := e.do("DELETE", path, nil)
		if r.status == 404 {
			break
		}
		if r.status != 400 || r.json(t)["error_code"] != "CSBS.2003" {
			t.Fatalf("repeated delete: %d %s, want 400 CSBS.2003 or 404", r.status, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.count(project, ""); n != 1 {
		t.Fatalf("count %d after delete, want 1", n)
	}
	if it := e.item(project, keep); it == nil || it["status"] != "available" {
		t.Fatalf("the other backup: %v", it)
	}
	// Garbage collection runs after the delete; wait for the repository to shrink.
	deadline := time.Now().Add(30 * time.Second)
	for e.repoBytes() > before-10*mib && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if after := e.repoBytes(); after > before-10*mib {
		t.Fatalf("repository %d bytes before the delete, %d after; want at least 10 MiB less", before, after)
	}
	if r := e.do("GET", "/v1/"+project+"/checkpoint_items/"+drop, nil); r.status != 404 {
		t.Fatalf("deleted backup: %d", r.status)
	}

	// A delete of one item of a checkpoint by ?checkpoint_items=.
	cp2, third := e.protect(project, serverID, nil)
	e.waitStatus(project, third, 60*time.Second, "available")
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cp2+"?checkpoint_items="+newUUID(), nil); r.status != 404 {
		t.Fatalf("delete of an item not in the checkpoint: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cp2+"?checkpoint_items="+third, nil); r.status != 200 {
		t.Fatalf("delete by checkpoint_items: %d %s", r.status, r.body)
	}
	e.waitStatus(project, third, 30*time.Second, "gone")
}

// TestKillDuringBackup kills csbs with SIGKILL while a backup runs. After a
// restart the backup resumes and ends available, with the right data; with
// max_attempts 1 it ends in error with a reason instead. Never does a
// backup stay protecting.
func TestKillDuringBackup(t *testing.T) {
	for _, tc := range []struct {
		name     string
		attempts string
		want     string
	}{
		{"resumes", "3", "available"},
		{"fails cleanly", "1", "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "--jobs-max-attempts", tc.attempts)
			// Big enough that the backup is still running when killed.
			paths := e.addServer(serverID, project, "ACTIVE", 1024*mib)
			fillRandom(t, paths[0], 1024*mib)
			want := fileHash(t, paths[0])
			e.start()

			_, id := e.protect(project, serverID, nil)
			e.waitStatus(project, id, 30*time.Second, "protecting")
			time.Sleep(150 * time.Millisecond)
			if it := e.item(project, id); it["status"] != "protecting" {
				t.Skipf("the backup finished before it could be killed (%v); the machine is too fast for this size", it["status"])
			}
			e.stop(syscall.SIGKILL)

			e.start()
			start := time.Now()
			it := e.waitStatus(project, id, 60*time.Second, "available", "error")
			t.Logf("after the restart the backup ended %s in %s", it["status"], time.Since(start).Round(time.Millisecond))
			if it["status"] != tc.want {
				t.Fatalf("backup ended %v, want %s: %v", it["status"], tc.want, it["extend_info"])
			}
			ei := it["extend_info"].(map[string]any)
			if tc.want == "error" {
				if !strings.Contains(ei["fail_reason"].(string), "interrupted") || ei["fail_op"] != "backup" {
					t.Fatalf("fail_reason %q fail_op %q", ei["fail_reason"], ei["fail_op"])
				}
				return
			}
			e.stop(syscall.SIGTERM)
			if got := restoreFromRepository(t, e, id, 0); got != want {
				t.Fatalf("restored disk hash %s, backed up %s", got, want)
			}
		})
	}
}

// TestProgressAndGracefulShutdown watches a backup's progress move while it
// runs, stops csbs with SIGTERM in the middle (it exits cleanly, leaving the
// job resumable), and sees the backup finish after a restart.
func TestProgressAndGracefulShutdown(t *testing.T) {
	e := newEnv(t, "--jobs-workers", "1")
	paths := e.addServer(serverID, project, "ACTIVE", 2048*mib)
	fillRandom(t, paths[0], 2048*mib)
	e.start()

	_, id := e.protect(project, serverID, nil)
	var seen []float64
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		it := e.item(project, id)
		p := it["extend_info"].(map[string]any)["progress"].(float64)
		if it["status"] == "protecting" && p > 0 && p < 100 && (len(seen) == 0 || p != seen[len(seen)-1]) {
			seen = append(seen, p)
		}
		if len(seen) >= 2 || it["status"] != "protecting" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(seen) < 2 {
		t.Skipf("the backup ended before its progress could be seen moving twice (%v); the machine is too fast for this size", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("progress went %v", seen)
		}
	}

	e.mu.Lock()
	cmd := e.cmd
	e.mu.Unlock()
	e.stop(syscall.SIGTERM)
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("csbs exited %d on SIGTERM, want 0:\n%s", code, tail(e.log(), 3000))
	}
	if !strings.Contains(e.log(), "running jobs resume at next start") {
		t.Fatal("no shutdown message in the log")
	}
	e.start()
	it := e.waitStatus(project, id, 90*time.Second, "available", "error")
	if it["status"] != "available" || it["extend_info"].(map[string]any)["progress"].(float64) != 100 {
		t.Fatalf("after the restart the backup ended %v: %v", it["status"], it["extend_info"])
	}
}

// fillRandom overwrites a whole image with random bytes.
func fillRandom(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rnd := mrand.New(mrand.NewPCG(uint64(randInt(1<<62)), 1))
	block := make([]byte, 64*mib)
	for off := int64(0); off < size; off += int64(len(block)) {
		for i := 0; i < len(block); i += 8 {
			v := rnd.Uint64()
			for j := 0; j < 8; j++ {
				block[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.WriteAt(block[:min(int64(len(block)), size-off)], off); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiskDisappears removes a disk image between the request and the
// backup: the backup fails with a reason that names the disk.
func TestDiskDisappears(t *testing.T) {
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 8*mib, 8*mib)
	e.start()
	if err := os.Remove(paths[1]); err != nil {
		t.Fatal(err)
	}
	_, id := e.protect(project, serverID, nil)
	it := e.waitStatus(project, id, 60*time.Second, "available", "error")
	if it["status"] != "error" {
		t.Fatalf("backup of a server with a vanished disk ended %v", it["status"])
	}
	ei := it["extend_info"].(map[string]any)
	reason := ei["fail_reason"].(string)
	disk := e.inv.Servers[0].Volumes[1]
	if !strings.Contains(reason, disk.Name) || !strings.Contains(reason, disk.ID) {
		t.Fatalf("fail_reason %q does not name disk %s (%s)", reason, disk.Name, disk.ID)
	}
	if ei["fail_op"] != "backup" {
		t.Fatalf("fail_op %q", ei["fail_op"])
	}
	fc := ei["fail_code"].(map[string]any)
	if _, ok := fc["Code"].(string); !ok {
		t.Fatalf("fail_code.Code is not a string: %v", fc)
	}
	// A failed backup can be deleted.
	r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+it["checkpoint_id"].(string), nil)
	if r.status != 200 {
		t.Fatalf("delete failed backup: %d %s", r.status, r.body)
	}
	e.waitStatus(project, id, 30*time.Second, "gone")
}
