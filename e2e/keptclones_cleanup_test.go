package e2e

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/compute/local/xfstest"
)

// TestKeptCloneOfVolumeRemovedWhileDown: a disk removed from the inventory
// while csbs is stopped, alone in its directory, leaves a kept clone that
// no inventory names; the restarted service still finds it and removes it.
func TestKeptCloneOfVolumeRemovedWhileDown(t *testing.T) {
	mnt := xfstest.Mount(t)
	e := newEnv(t)
	e.dir = filepath.Join(mnt, "gone")
	if err := os.Mkdir(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.addServer(serverID, project, "ACTIVE", 8*mib)
	e.dir = mnt
	other := newUUID()
	e.addServer(other, project, "ACTIVE", 8*mib)
	e.start()
	_, id := e.protect(project, serverID, nil)
	e.waitStatus(project, id, time.Minute, "available")
	kept := filepath.Join(mnt, "gone", local.KeptDirName)
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("no kept clone: %v", err)
	}

	e.stop(syscall.SIGTERM)
	e.inv.Servers = e.inv.Servers[1:]
	e.writeInventory()
	// The clean-up leaves files younger than a minute alone (a backup may
	// be keeping them): make them older.
	old := time.Now().Add(-5 * time.Minute)
	ents, _ := os.ReadDir(kept)
	for _, en := range ents {
		if err := os.Chtimes(filepath.Join(kept, en.Name()), old, old); err != nil {
			t.Fatal(err)
		}
	}
	e.start()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(kept); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kept clone of a disk removed while csbs was down is still there after a restart")
		}
	}
	// The backup is untouched.
	if it := e.item(project, id); it["status"] != "available" {
		t.Errorf("the backup of the removed server: %v", it["status"])
	}
}

// TestKeptCloneOfBackupDeletedOnOtherNode: the last backup of a server is
// deleted by another node than the one with the server's disks (deletes
// run on any node); the kept clone on the server's node goes all the same,
// at its next start (and at its sweep every ten minutes).
func TestKeptCloneOfBackupDeletedOnOtherNode(t *testing.T) {
	mnt := xfstest.Mount(t)
	c := newCluster(t, "a", "b")
	a, b := c.nodes["a"], c.nodes["b"]
	a.dir = mnt
	a.addServer(serverID, project, "ACTIVE", 8*mib)
	a.start()
	b.start()
	_, id := b.protect(project, serverID, nil)
	it := b.waitStatus(project, id, time.Minute, "available")
	c.ranOn(id, "protect", "a")
	kept := filepath.Join(mnt, local.KeptDirName)
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("no kept clone on node a: %v", err)
	}
	// Node a is down: the delete runs on b.
	a.stop(syscall.SIGTERM)
	if r := b.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+it["checkpoint_id"].(string), nil); r.status != 200 {
		t.Fatalf("delete through b: %d %s", r.status, r.body)
	}
	b.waitStatus(project, id, 30*time.Second, "gone")
	if node, owner, _ := c.jobOf(id, "delete"); node != "" || !strings.HasPrefix(owner, "b/") {
		t.Fatalf("the delete was placed on node %q and run by %q; want no node, run by b", node, owner)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("the kept clone went while its node was down (%v)", err)
	}
	a.start()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(kept); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kept clone of a server whose last backup node b deleted is still on node a")
		}
	}
}
