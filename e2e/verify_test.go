package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// damagePacks flips a byte inside the first chunk of every pack of the
// repository (its data/ files), as a failing disk would.
func (e *env) damagePacks() int {
	e.t.Helper()
	packs, err := filepath.Glob(filepath.Join(e.dataDir, "repository", "data", "*", "*"))
	if err != nil || len(packs) == 0 {
		e.t.Fatalf("packs of the repository: %v %v", packs, err)
	}
	for _, p := range packs {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			e.t.Fatal(err)
		}
		var b [1]byte
		if _, err := f.ReadAt(b[:], 100); err != nil {
			e.t.Fatal(err)
		}
		b[0] ^= 0x40
		if _, err := f.WriteAt(b[:], 100); err != nil {
			e.t.Fatal(err)
		}
		f.Close()
	}
	return len(packs)
}

// TestVerifyDamage, through the real binary: the scheduled verification
// (verify.schedule 1s) records a new backup as verified and intact; after a
// byte of its data is damaged on disk, `csbs backup verify` finds it
// (non-zero exit), quarantines the chunk, and the backup says so in
// extend_info (damaged, the disk and offset); `csbs backup damaged` lists
// it; /metrics counts it and reports the run; a restore is refused with
// CSBS.4000 naming the disk and the offset, and the disk is not touched.
// The next backup of the server stores the data again, after which the
// damaged backup restores byte-exactly (which records it intact) and
// verifies intact.
func TestVerifyDamage(t *testing.T) {
	e := newEnv(t, "--verify-schedule", "1s", "--verify-max-age", "1h")
	paths := e.addServer(serverID, project, "ACTIVE", 16*mib)
	want := hashes(t, paths)
	orig, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	conn := []string{"CSBS_ENDPOINT=" + e.base, "CSBS_PROJECT_ID=" + project}

	cp, id := e.protect(project, serverID, nil)
	e.waitStatus(project, id, 60*time.Second, "available")
	// The schedule verifies it within a few seconds.
	deadline := time.Now().Add(20 * time.Second)
	var ei map[string]any
	for {
		ei = e.item(project, id)["extend_info"].(map[string]any)
		if ei["verified_at"] != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ei["verified_at"] == "" || ei["damaged"] != false {
		t.Fatalf("scheduled verification: verified_at %q damaged %v", ei["verified_at"], ei["damaged"])
	}
	m := e.scrape()
	if m["csbs_backups_damaged"] != 0 || m["csbs_verify_last_run_timestamp_seconds"] == 0 || m["csbs_verify_last_run_bytes_per_second"] <= 0 {
		t.Fatalf("metrics after the scheduled run: damaged %v last run %v rate %v", m["csbs_backups_damaged"],
			m["csbs_verify_last_run_timestamp_seconds"], m["csbs_verify_last_run_bytes_per_second"])
	}

	e.damagePacks()
	r := cli(t, conn, "backup", "verify")
	if r.code == 0 || !strings.Contains(r.stdout, "1 damaged") || !strings.Contains(r.stdout, id) {
		t.Fatalf("backup verify over damage: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	ei = e.item(project, id)["extend_info"].(map[string]any)
	dv, _ := ei["damaged_volumes"].([]any)
	if ei["damaged"] != true || len(dv) != 1 {
		t.Fatalf("extend_info after verify: damaged %v volumes %v reason %v", ei["damaged"], ei["damaged_volumes"], ei["damage_reason"])
	}
	vol := dv[0].(map[string]any)
	offs := vol["offsets"].([]any)
	volID := vol["volume_id"].(string)
	if volID != serverID[:8]+"-vol0" || len(offs) != 1 {
		t.Fatalf("damaged volume %v", vol)
	}
	off := fmt.Sprint(int64(offs[0].(float64)))

	r = cli(t, conn, "backup", "damaged", "-o", "json").must(t, "backup damaged")
	var listed []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || len(listed) != 1 || listed[0]["checkpoint_item_id"] != id {
		t.Fatalf("backup damaged: %v %s", err, r.stdout)
	}
	if m := e.scrape(); m["csbs_backups_damaged"] != 1 {
		t.Fatalf("csbs_backups_damaged = %v, want 1", m["csbs_backups_damaged"])
	}

	scribble(t, paths[0])
	scribbled := fileHash(t, paths[0])
	res := e.do("POST", "/v1/"+project+"/restores", e.restoreBody(cp, id, serverID, false))
	body := string(res.body)
	if res.status != 400 || !strings.Contains(body, "CSBS.4000") || !strings.Contains(body, volID) || !strings.Contains(body, off) {
		t.Fatalf("restore of the damaged backup: %d %s (want CSBS.4000 naming %s and offset %s)", res.status, body, volID, off)
	}
	if fileHash(t, paths[0]) != scribbled {
		t.Fatal("a refused restore wrote the disk")
	}

	// Heal: the next backup of the server (its disk as backed up) stores
	// the quarantined data again.
	if err := os.WriteFile(paths[0], orig, 0o600); err != nil {
		t.Fatal(err)
	}
	_, id2 := e.protect(project, serverID, nil)
	e.waitStatus(project, id2, 60*time.Second, "available")
	scribble(t, paths[0])
	e.restoreOK(project, e.restoreBody(cp, id, serverID, false))
	sameHashes(t, "restore of the healed backup", paths, want)
	// The restore authenticated every chunk: it counts as a verification.
	if ei = e.item(project, id)["extend_info"].(map[string]any); ei["damaged"] != false {
		t.Fatalf("a backup restored whole still shows damaged: %v", ei["damage_reason"])
	}
	cli(t, conn, "backup", "verify", id).must(t, "backup verify after healing")
	if ei = e.item(project, id)["extend_info"].(map[string]any); ei["damaged"] != false {
		t.Fatalf("healed backup still damaged: %v", ei["damage_reason"])
	}
	if m := e.scrape(); m["csbs_backups_damaged"] != 0 {
		t.Fatalf("csbs_backups_damaged = %v after healing, want 0", m["csbs_backups_damaged"])
	}
}

// TestRepoRepair, through the real binary: with every index file lost,
// `csbs repo repair` indexes the packs again from their trailers and the
// backup restores; after a damaged chunk was quarantined by `csbs repo
// verify`, repair names the backup that stays incomplete and exits 1.
func TestRepoRepair(t *testing.T) {
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 16*mib)
	want := hashes(t, paths)
	e.start()
	cp, id := e.protect(project, serverID, map[string]any{"backup_name": "kept"})
	e.waitStatus(project, id, 60*time.Second, "available")
	e.stop(syscall.SIGTERM)

	idx, _ := filepath.Glob(filepath.Join(e.dataDir, "repository", "index", "*"))
	for _, f := range idx {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	// A pack younger than the GC margin may be a running backup's: left
	// alone (the default margin is 5 minutes).
	out, ok := runCSBS(t, "repo", "repair", "--data-dir", e.dataDir)
	if ok || !strings.Contains(out, "1 packs without index file are younger") {
		t.Fatalf("repair of a young pack (ok %v):\n%s", ok, out)
	}
	time.Sleep(1100 * time.Millisecond)
	r := cli(t, []string{"CSBS_REPOSITORY_GC_MARGIN=1s"}, "repo", "repair", "--data-dir", e.dataDir)
	out, ok = r.stdout+r.stderr, r.code == 0
	if !ok || !strings.Contains(out, "indexed 1 packs again") || !strings.Contains(out, "all 1 backups are complete") {
		t.Fatalf("repair of lost index files (ok %v):\n%s", ok, out)
	}
	e.start()
	scribble(t, paths[0])
	e.restoreOK(project, e.restoreBody(cp, id, serverID, false))
	sameHashes(t, "restore after repair", paths, want)
	e.stop(syscall.SIGTERM)

	e.damagePacks()
	if out, ok := runCSBS(t, "repo", "verify", "--data-dir", e.dataDir); ok {
		t.Fatalf("verify over damage succeeded:\n%s", out)
	}
	out, ok = runCSBS(t, "repo", "repair", "--data-dir", e.dataDir)
	if ok || !strings.Contains(out, id) || !strings.Contains(out, "kept") || !strings.Contains(out, serverID[:8]+"-vol0 at offsets") {
		t.Fatalf("repair with a quarantined chunk (ok %v) does not name backup %s:\n%s", ok, id, out)
	}
}
