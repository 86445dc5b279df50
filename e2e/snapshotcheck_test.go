package e2e

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// TestRestoreChecksSnapshotOwner: a database that points a backup at
// another backup's repository snapshot (damage, or a database restored
// from elsewhere) never gets that data restored: the restore of the first
// backup, pointed at the second one's snapshot of the same disks, fails
// naming the mismatch and the disk is not touched (before the check it
// "succeeded" with the second backup's bytes).
func TestRestoreChecksSnapshotOwner(t *testing.T) {
	e := newEnv(t)
	a := serverID
	pa := e.addServer(a, project, "ACTIVE", 4*mib)
	e.start()
	// Two backups of the same server (same disks), with different bytes.
	cpA, ia := e.protect(project, a, nil)
	e.waitStatus(project, ia, 60*time.Second, "available")
	scribble(t, pa[0])
	_, ib := e.protect(project, a, nil)
	e.waitStatus(project, ib, 60*time.Second, "available")

	db, err := sql.Open("sqlite", filepath.Join(e.dataDir, "csbs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	snapB := strings.ReplaceAll(ib, "-", "")
	snapA := strings.ReplaceAll(ia, "-", "")
	res, err := db.Exec(`UPDATE items SET info = replace(info, ?, ?) WHERE id = ?`, snapA, snapB, ia)
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("point backup A at B's snapshot: %v (%d rows)", err, n)
	}

	scribble(t, pa[0])
	changed := fileHash(t, pa[0])
	id := e.startRestore(project, e.restoreBody(cpA, ia, a, false))
	rs := e.waitRestore(project, id, 60*time.Second)
	reason := strings.Join(func() []string {
		var out []string
		for _, v := range rs["resources_reason"].(map[string]any) {
			out = append(out, v.(string))
		}
		return out
	}(), " ")
	if rs["status"] == "success" || !strings.Contains(reason, "was made for backup") {
		t.Fatalf("restore of a backup whose snapshot is another's: %v %v", rs["status"], rs["resources_reason"])
	}
	if fileHash(t, pa[0]) != changed {
		t.Errorf("the disk was written by a restore that had to be refused")
	}
}
