package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fillUp writes a file in dir until its file system is full and returns
// it; removing it frees the space again.
func fillUp(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Sync()
	return p
}

// TestDatabaseFull: the database's disk (SQLite in data_dir, on a small
// file system) fills up. A backup asked for then is refused with a reason
// that says the database's disk is full, never a half-written record; the
// service keeps answering reads; the earlier backup still restores; once
// space is freed, backups work again.
func TestDatabaseFull(t *testing.T) {
	fsDir := smallFS(t, 16*mib)
	e := newEnv(t, "--repository-url", "file://"+filepath.Join(t.TempDir(), "repo"))
	e.dataDir = filepath.Join(fsDir, "data")
	paths := e.addServer(serverID, project, "ACTIVE", 4*mib)
	fillRandom(t, paths[0], 4*mib)
	e.start()
	cp, it := e.protect(project, serverID, nil)
	e.waitStatus(project, it, 60*time.Second, "available")
	before := e.count(project, "")

	filler := fillUp(t, fsDir)
	r := e.do("POST", "/v1/"+project+"/providers/"+provider+"/resources/"+serverID+"/action",
		map[string]any{"protect": map[string]any{"backup_name": "no-room"}})
	t.Logf("backup on a full database disk: %d %s", r.status, r.body)
	if r.status < 400 || r.status == 500 || !strings.Contains(string(r.body), "database") || !strings.Contains(string(r.body), "full") {
		t.Errorf("a backup while the database's disk is full: %d %s; want a refusal saying the database's disk is full", r.status, r.body)
	}
	if n := e.count(project, ""); n != before {
		t.Errorf("count %d while the database's disk is full, want %d (no half-written record)", n, before)
	}
	want := hashes(t, paths)
	scribble(t, paths[0])
	os.Remove(filler)
	e.restoreOK(project, e.restoreBody(cp, it, serverID, false))
	sameHashes(t, "the backup made before the disk filled up", paths, want)
	_, it2 := e.protect(project, serverID, nil)
	e.waitStatus(project, it2, 60*time.Second, "available")
}
