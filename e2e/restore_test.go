package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// restoreBody is a "Creating a Restoration Task" body; vols are
// (backup_id, volume_id) pairs, none to let csbs map the disks. An empty
// checkpointID is looked up.
func (e *env) restoreBody(checkpointID, itemID, server string, powerOn bool, vols ...[2]string) map[string]any {
	e.t.Helper()
	if it := e.item(project, itemID); checkpointID == "" && it != nil {
		checkpointID = it["checkpoint_id"].(string)
	}
	if checkpointID == "" {
		checkpointID = newUUID()
	}
	targets := map[string]any{"server_id": server}
	if len(vols) > 0 {
		var m []map[string]string
		for _, v := range vols {
			m = append(m, map[string]string{"backup_id": v[0], "volume_id": v[1]})
		}
		targets["volumes"] = m
	}
	return map[string]any{"restore": map[string]any{
		"provider_id": provider, "checkpoint_id": checkpointID,
		"parameters": map[string]any{"checkpoint_item_id": itemID, "power_on": powerOn, "targets": targets},
	}}
}

// startRestore posts a restore and returns its id.
func (e *env) startRestore(projectID string, body map[string]any) string {
	e.t.Helper()
	r := e.do("POST", "/v1/"+projectID+"/restores", body)
	if r.status != 200 {
		e.t.Fatalf("restore: %d %s", r.status, r.body)
	}
	rs := r.json(e.t)["restore"].(map[string]any)
	if rs["status"] != "in_progress" {
		e.t.Fatalf("new restore has status %v", rs["status"])
	}
	return rs["id"].(string)
}

// waitRestore polls a restore until it is no longer in progress.
func (e *env) waitRestore(projectID, id string, timeout time.Duration) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		r := e.do("GET", "/v1/"+projectID+"/restores/"+id, nil)
		if r.status != 200 {
			e.t.Fatalf("get restore %s: %d %s", id, r.status, r.body)
		}
		last = r.json(e.t)["restore"].(map[string]any)
		if last["status"] != "in_progress" {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("restore %s still in progress after %s: %v", id, timeout, last)
	return nil
}

// restoreOK restores and waits for success.
func (e *env) restoreOK(projectID string, body map[string]any) map[string]any {
	e.t.Helper()
	rs := e.waitRestore(projectID, e.startRestore(projectID, body), 60*time.Second)
	if rs["status"] != "success" {
		e.t.Fatalf("restore ended %v: %v", rs["status"], rs["resources_reason"])
	}
	return rs
}

// volumeBackups returns (backup id, source volume id) of each disk backup.
func volumeBackups(it map[string]any) [][2]string {
	var out [][2]string
	for _, v := range it["extend_info"].(map[string]any)["volume_backups"].([]any) {
		vb := v.(map[string]any)
		out = append(out, [2]string{vb["id"].(string), vb["source_volume_id"].(string)})
	}
	return out
}

func hashes(t *testing.T, paths []string) []string {
	t.Helper()
	var hs []string
	for _, p := range paths {
		hs = append(hs, fileHash(t, p))
	}
	return hs
}

// scribble overwrites parts of an image, including parts that are holes
// or zeros in the backups, so a restore must really put them back.
func scribble(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	junk := bytes.Repeat([]byte("scribbled "), 100<<10)
	for off := int64(0); off < fi.Size(); off += 3 * mib {
		if _, err := f.WriteAt(junk[:min(int64(len(junk)), fi.Size()-off)], off); err != nil {
			t.Fatal(err)
		}
	}
}

// sameHashes fails unless the images hash to want.
func sameHashes(t *testing.T, what string, paths []string, want []string) {
	t.Helper()
	for i, h := range hashes(t, paths) {
		if h != want[i] {
			t.Fatalf("%s: disk %d has SHA-256 %s, the backup %s", what, i, h, want[i])
		}
	}
}

// TestRestoreBackups restores the first of two backups and then the second
// (incremental), deletes the first and restores the second again, and
// follows the restores through the list.
func TestRestoreBackups(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			e := newEnv(t)
			if db == "postgres" {
				e.withPostgres()
			}
			paths := e.addServer(serverID, project, "ACTIVE", 24*mib, 12*mib)
			e.start()

			cp1, id1 := e.protect(project, serverID, map[string]any{"backup_name": "first"})
			e.waitStatus(project, id1, 60*time.Second, "available")
			h1 := hashes(t, paths)

			// Change both disks: new data, and zeros over data.
			f, _ := os.OpenFile(paths[0], os.O_RDWR, 0)
			f.WriteAt(bytes.Repeat([]byte("changed!"), mib/8), 5*mib)
			f.Close()
			f, _ = os.OpenFile(paths[1], os.O_RDWR, 0)
			f.WriteAt(make([]byte, 2*mib), 0)
			f.Close()
			cp2, id2 := e.protect(project, serverID, map[string]any{"backup_name": "second"})
			it2 := e.waitStatus(project, id2, 60*time.Second, "available")
			if it2["extend_info"].(map[string]any)["incremental"] != true {
				t.Fatal("second backup is not incremental")
			}
			h2 := hashes(t, paths)

			// The first backup, disks mapped by csbs (same server, same disks).
			for _, p := range paths {
				scribble(t, p)
			}
			rid := e.startRestore(project, e.restoreBody(cp1, id1, serverID, true))
			if st := e.item(project, id1)["status"]; st != "waiting_restore" && st != "restoring" && st != "available" {
				t.Fatalf("backup being restored is %v", st)
			}
			rs := e.waitRestore(project, rid, 60*time.Second)
			if rs["status"] != "success" {
				t.Fatalf("restore ended %v: %v", rs["status"], rs["resources_reason"])
			}
			checkRestoreShape(t, rs, cp1, id1)
			if got := rs["resources_status"].(map[string]any)["OS::Nova::Server#"+serverID]; got != "available" {
				t.Fatalf("resources_status %v", rs["resources_status"])
			}
			sameHashes(t, "first backup", paths, h1)
			if st := e.item(project, id1)["status"]; st != "available" {
				t.Fatalf("restored backup is %v, want available", st)
			}

			// The second, mapped explicitly.
			for _, p := range paths {
				scribble(t, p)
			}
			e.restoreOK(project, e.restoreBody(cp2, id2, serverID, true, volumeBackups(it2)...))
			sameHashes(t, "second backup", paths, h2)

			// Without the first backup the second still restores.
			r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cp1, nil)
			if r.status != 200 {
				t.Fatalf("delete: %d %s", r.status, r.body)
			}
			e.waitStatus(project, id1, 60*time.Second, "gone")
			for _, p := range paths {
				scribble(t, p)
			}
			e.restoreOK(project, e.restoreBody(cp2, id2, serverID, false))
			sameHashes(t, "second backup after deleting the first", paths, h2)

			// The list: newest first, status filter, paging links.
			r = e.do("GET", "/v1/"+project+"/restores?status=success&limit=2", nil)
			if r.status != 200 {
				t.Fatalf("list restores: %d %s", r.status, r.body)
			}
			page := r.json(t)
			if rs := page["restores"].([]any); len(rs) != 2 || rs[1].(map[string]any)["parameters"].(map[string]any)["checkpoint_item_id"] != id2 {
				t.Fatalf("first page: %v", rs)
			}
			next := page["restores_links"].([]any)[0].(map[string]any)["href"].(string)
			r = e.do("GET", next, nil)
			if rs := r.json(t)["restores"].([]any); len(rs) != 1 || rs[0].(map[string]any)["id"] != rid {
				t.Fatalf("second page: %s", r.body)
			}
			if r := e.do("GET", "/v1/"+project+"/restores?status=fail", nil); !strings.Contains(string(r.body), `"restores":[]`) {
				t.Fatalf("failed restores: %s", r.body)
			}
			if r := e.do("GET", "/v1/otherproject/restores/"+rid, nil); r.status != 404 {
				t.Fatalf("restore of another project: %d %s", r.status, r.body)
			}
		})
	}
}

// checkRestoreShape checks the fields of the reference's restore_resp.
func checkRestoreShape(t *testing.T, rs map[string]any, checkpointID, itemID string) {
	t.Helper()
	for _, k := range []string{"id", "checkpoint_id", "project_id", "provider_id", "restore_target", "status"} {
		if _, ok := rs[k].(string); !ok {
			t.Errorf("restore.%s is not a string: %v", k, rs[k])
		}
	}
	for _, k := range []string{"resources_reason", "resources_status"} {
		if _, ok := rs[k].(map[string]any); !ok {
			t.Errorf("restore.%s is not an object: %v", k, rs[k])
		}
	}
	p := rs["parameters"].(map[string]any)
	if rs["checkpoint_id"] != checkpointID || p["checkpoint_item_id"] != itemID || rs["provider_id"] != provider || rs["project_id"] != project {
		t.Errorf("restore ids: %v", rs)
	}
	if _, ok := p["power_on"].(bool); !ok {
		t.Errorf("power_on is not a bool: %v", p)
	}
	tg := p["targets"].(map[string]any)
	if _, ok := tg["server_id"].(string); !ok {
		t.Errorf("targets.server_id: %v", tg)
	}
	for _, v := range tg["volumes"].([]any) {
		m := v.(map[string]any)
		if m["backup_id"] == "" || m["volume_id"] == "" {
			t.Errorf("targets.volumes: %v", tg)
		}
	}
	if !uuidRe.MatchString(rs["id"].(string)) || !timeRe.MatchString(rs["created_at"].(string)) {
		t.Errorf("id/created_at: %v %v", rs["id"], rs["created_at"])
	}
}

// TestRestoreOtherServerLargerDisks restores onto another server whose
// disks are larger and full of other data: the backup's bytes, holes
// included, come back; the rest of each disk is left as it was.
func TestRestoreOtherServerLargerDisks(t *testing.T) {
	e := newEnv(t)
	src := e.addServer(serverID, project, "ACTIVE", 16*mib, 8*mib)
	other := newUUID()
	dst := e.addServer(other, project, "SHUTOFF", 24*mib+4096, 16*mib)
	e.start()
	_, id := e.protect(project, serverID, nil)
	it := e.waitStatus(project, id, 60*time.Second, "available")
	want := hashes(t, src)
	var tails [][]byte
	for i, p := range dst {
		b, _ := os.ReadFile(p)
		fi, _ := os.Stat(src[i])
		tails = append(tails, b[fi.Size():])
	}
	vbs := volumeBackups(it)
	dv := e.inv.Servers[1].Volumes
	e.restoreOK(project, e.restoreBody("", id, other, false, [2]string{vbs[0][0], dv[0].ID}, [2]string{vbs[1][0], dv[1].ID}))
	for i, p := range dst {
		b, _ := os.ReadFile(p)
		fi, _ := os.Stat(src[i])
		head := filepath.Join(t.TempDir(), "head")
		os.WriteFile(head, b[:fi.Size()], 0o600)
		if got := fileHash(t, head); got != want[i] {
			t.Fatalf("disk %d: restored bytes hash %s, backed up %s", i, got, want[i])
		}
		if !bytes.Equal(b[fi.Size():], tails[i]) {
			t.Fatalf("disk %d: the bytes beyond the backup's size changed", i)
		}
	}
}

// TestRestoreRefusals sends every refused restore, as a restore and as
// check_restorable: each gets its code and changes nothing.
func TestRestoreRefusals(t *testing.T) {
	e := newEnv(t)
	e.addServer(serverID, project, "ACTIVE", 16*mib, 8*mib) // A: the backup
	bID := newUUID()
	e.addServer(bID, project, "ACTIVE", 16*mib, 16*mib) // B: a fine target
	small := newUUID()
	e.addServer(small, project, "ACTIVE", 4*mib, 4*mib)
	diskless := newUUID()
	e.addServer(diskless, project, "ACTIVE")
	broken := newUUID()
	e.addServer(broken, project, "ERROR", 16*mib, 8*mib)
	gone := newUUID()
	gonePaths := e.addServer(gone, project, "ACTIVE", 4*mib)
	release := filepath.Join(t.TempDir(), "go")
	e.inv.Servers[1].StopCommand = []string{"sh", "-c", "while [ ! -e " + release + " ]; do sleep 0.05; done"}
	e.writeInventory()
	e.start()

	cpA, itA := e.protect(project, serverID, nil)
	a := e.waitStatus(project, itA, 60*time.Second, "available")
	_, itB := e.protect(project, bID, nil)
	e.waitStatus(project, itB, 60*time.Second, "available")
	os.Remove(gonePaths[0])
	_, itErr := e.protect(project, gone, nil)
	e.waitStatus(project, itErr, 60*time.Second, "error")

	vb := volumeBackups(a)
	vA, vB, vS := e.inv.Servers[0].Volumes, e.inv.Servers[1].Volumes, e.inv.Servers[2].Volumes
	m := func(b, v string) [2]string { return [2]string{b, v} }
	tests := []struct {
		name   string
		item   string
		server string
		vols   [][2]string
		status int
		code   string
	}{
		{"backup not available", itErr, serverID, nil, 400, "CSBS.4000"},
		{"unknown backup", newUUID(), serverID, nil, 404, "CSBS.3001"},
		{"unknown server", itA, newUUID(), nil, 400, "CSBS.6000"},
		{"server in error", itA, broken, nil, 400, "CSBS.6016"},
		{"server without disks", itA, diskless, nil, 400, "CSBS.6020"},
		{"disk not on target", itA, serverID, [][2]string{m(vb[0][0], vA[0].ID), m(vb[1][0], "no-such-disk")}, 400, "CSBS.6014"},
		{"disk backup not in backup", itA, serverID, [][2]string{m(vb[0][0], vA[0].ID), m("no-such-backup", vA[1].ID)}, 400, "CSBS.6017"},
		{"partial", itA, serverID, [][2]string{m(vb[0][0], vA[0].ID)}, 400, "CSBS.6018"},
		{"partial by default", itA, bID, nil, 400, "CSBS.6018"},
		{"data disk onto system disk", itA, serverID, [][2]string{m(vb[1][0], vA[0].ID), m(vb[0][0], vA[1].ID)}, 400, "CSBS.6023"},
		{"target too small", itA, small, [][2]string{m(vb[0][0], vS[0].ID), m(vb[1][0], vS[1].ID)}, 400, "CSBS.6024"},
		{"one disk twice", itA, serverID, [][2]string{m(vb[0][0], vA[0].ID), m(vb[1][0], vA[0].ID)}, 400, "CSBS.9001"},
	}
	check := func(name, item, server, resourceType string, vols [][2]string, code string) {
		t.Helper()
		var vm []map[string]string
		for _, v := range vols {
			vm = append(vm, map[string]string{"backup_id": v[0], "volume_id": v[1]})
		}
		target := map[string]any{"resource_id": server, "resource_type": resourceType}
		if vm != nil {
			target["volumes"] = vm
		}
		r := e.do("POST", "/v1/"+project+"/providers/"+provider+"/resources/action",
			map[string]any{"check_restorable": []any{map[string]any{"checkpoint_item_id": item, "target": target}}})
		if r.status != 200 {
			t.Fatalf("%s: check_restorable: %d %s", name, r.status, r.body)
		}
		res := r.json(t)["restorable"].([]any)[0].(map[string]any)
		if code == "" {
			if res["result"] != true || res["error_code"] != "" {
				t.Fatalf("%s: check_restorable answered %v", name, res)
			}
			return
		}
		if res["result"] != false || res["error_code"] != code || res["error_msg"] == "" || res["resource_id"] != server {
			t.Fatalf("%s: check_restorable answered %v, want %s", name, res, code)
		}
	}
	for _, tc := range tests {
		r := e.do("POST", "/v1/"+project+"/restores", e.restoreBody("", tc.item, tc.server, true, tc.vols...))
		if r.status != tc.status || r.json(t)["error_code"] != tc.code {
			t.Fatalf("%s: %d %s, want %d %s", tc.name, r.status, r.body, tc.status, tc.code)
		}
		if tc.code != "CSBS.9001" {
			check(tc.name, tc.item, tc.server, "OS::Nova::Server", tc.vols, tc.code)
		}
	}
	check("volume type", itA, serverID, "OS::Cinder::Volume", nil, "CSBS.6013")
	check("restorable", itA, serverID, "OS::Nova::Server", nil, "")
	for name, body := range map[string]string{
		"no server_id":     `{"restore": {"provider_id": "` + provider + `", "checkpoint_id": "` + cpA + `", "parameters": {"checkpoint_item_id": "` + itA + `", "power_on": true, "targets": {}}}}`,
		"wrong provider":   `{"restore": {"provider_id": "x", "checkpoint_id": "` + cpA + `", "parameters": {"checkpoint_item_id": "` + itA + `", "power_on": true, "targets": {"server_id": "` + serverID + `"}}}}`,
		"power_on text":    `{"restore": {"provider_id": "` + provider + `", "checkpoint_id": "` + cpA + `", "parameters": {"checkpoint_item_id": "` + itA + `", "power_on": "yes", "targets": {"server_id": "` + serverID + `"}}}}`,
		"wrong checkpoint": `{"restore": {"provider_id": "` + provider + `", "checkpoint_id": "` + newUUID() + `", "parameters": {"checkpoint_item_id": "` + itA + `", "power_on": true, "targets": {"server_id": "` + serverID + `"}}}}`,
	} {
		r := e.do("POST", "/v1/"+project+"/restores", body)
		if r.status/100 != 4 {
			t.Fatalf("%s: %d %s", name, r.status, r.body)
		}
	}
	if r := e.do("GET", "/v1/"+project+"/restores", nil); !strings.Contains(string(r.body), `"restores":[]`) {
		t.Fatalf("refused restores were recorded: %s", r.body)
	}

	// B's stop command waits: B is restoring until we let it go.
	rid := e.startRestore(project, e.restoreBody("", itB, bID, true))
	r := e.do("POST", "/v1/"+project+"/restores", e.restoreBody("", itA, bID, true, m(vb[0][0], vB[0].ID), m(vb[1][0], vB[1].ID)))
	if r.status != 400 || r.json(t)["error_code"] != "CSBS.6015" {
		t.Fatalf("restore onto a restoring server: %d %s", r.status, r.body)
	}
	check("target restoring", itA, bID, "OS::Nova::Server", [][2]string{m(vb[0][0], vB[0].ID), m(vb[1][0], vB[1].ID)}, "CSBS.6015")
	r = e.do("POST", "/v1/"+project+"/restores", e.restoreBody("", itB, serverID, true))
	if r.status != 400 || r.json(t)["error_code"] != "CSBS.4000" {
		t.Fatalf("restore of a backup being restored: %d %s", r.status, r.body)
	}
	r = e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+e.item(project, itB)["checkpoint_id"].(string), nil)
	if r.status != 400 || r.json(t)["error_code"] != "CSBS.2003" {
		t.Fatalf("delete of a backup being restored: %d %s", r.status, r.body)
	}
	r = e.do("POST", fmt.Sprintf("/v1/%s/providers/%s/resources/%s/action", project, provider, bID), map[string]any{"protect": map[string]any{}})
	if r.status != 400 || r.json(t)["error_code"] != "CSBS.6005" {
		t.Fatalf("backup of a server being restored: %d %s", r.status, r.body)
	}
	os.WriteFile(release, nil, 0o600)
	if rs := e.waitRestore(project, rid, 60*time.Second); rs["status"] != "success" {
		t.Fatalf("restore ended %v", rs)
	}
	if st := e.item(project, itA)["status"]; st != "available" {
		t.Fatalf("refusals changed backup A to %v", st)
	}
}

// TestRestoreCommands checks that the stop command runs before the disks
// are written and the start command after (only with power_on), and that a
// failing stop command fails the restore without writing anything.
func TestRestoreCommands(t *testing.T) {
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 12*mib)
	logf := filepath.Join(t.TempDir(), "log")
	sum := "$(sha256sum " + paths[0] + " | cut -c1-64)"
	e.inv.Servers[0].StopCommand = []string{"sh", "-c", "echo stop " + sum + " >> " + logf}
	e.inv.Servers[0].StartCommand = []string{"sh", "-c", "echo start " + sum + " >> " + logf}
	e.writeInventory()
	e.start()
	_, id := e.protect(project, serverID, nil)
	e.waitStatus(project, id, 60*time.Second, "available")
	want := fileHash(t, paths[0])
	scribble(t, paths[0])
	before := fileHash(t, paths[0])

	e.restoreOK(project, e.restoreBody("", id, serverID, true))
	e.restoreOK(project, e.restoreBody("", id, serverID, false))
	got, _ := os.ReadFile(logf)
	if w := fmt.Sprintf("stop %s\nstart %s\nstop %s\n", before, want, want); string(got) != w {
		t.Fatalf("commands ran as\n%s\nwant\n%s", got, w)
	}

	e.inv.Servers[0].StopCommand = []string{"sh", "-c", "echo cannot stop >&2; exit 3"}
	e.writeInventory()
	scribble(t, paths[0])
	before = fileHash(t, paths[0])
	rs := e.waitRestore(project, e.startRestore(project, e.restoreBody("", id, serverID, true)), 60*time.Second)
	reason := fmt.Sprint(rs["resources_reason"])
	if rs["status"] != "fail" || !strings.Contains(reason, "cannot stop") || !strings.Contains(reason, "stop server") {
		t.Fatalf("restore with a failing stop command: %v", rs)
	}
	if fileHash(t, paths[0]) != before {
		t.Fatal("a restore whose stop command failed wrote the disk")
	}
	if st := e.item(project, id)["status"]; st != "available" {
		t.Fatalf("after a failed restore the backup is %v", st)
	}
}

// TestRestoreKilled kills csbs while a restore runs (in the stop command)
// and checks that after a restart it is resumed and completes byte-exactly.
func TestRestoreKilled(t *testing.T) {
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 16*mib, 8*mib)
	dir := t.TempDir()
	logf, release := filepath.Join(dir, "log"), filepath.Join(dir, "go")
	e.inv.Servers[0].StopCommand = []string{"sh", "-c", "echo stop >> " + logf + "; while [ ! -e " + release + " ]; do sleep 0.05; done"}
	e.writeInventory()
	e.start()
	_, id := e.protect(project, serverID, nil)
	e.waitStatus(project, id, 60*time.Second, "available")
	want := hashes(t, paths)
	for _, p := range paths {
		scribble(t, p)
	}
	rid := e.startRestore(project, e.restoreBody("", id, serverID, true))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(logf); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stop command did not run")
		}
	}
	e.stop(syscall.SIGKILL)
	os.WriteFile(release, nil, 0o600)
	e.start()
	rs := e.waitRestore(project, rid, 90*time.Second)
	if rs["status"] != "success" {
		t.Fatalf("restore after SIGKILL ended %v: %v", rs["status"], rs["resources_reason"])
	}
	sameHashes(t, "restore resumed after SIGKILL", paths, want)
	if st := e.item(project, id)["status"]; st != "available" {
		t.Fatalf("backup is %v after the restore", st)
	}
	if b, _ := os.ReadFile(logf); strings.Count(string(b), "stop") != 2 {
		t.Fatalf("stop command ran %d times, want 2 (once per run)", strings.Count(string(b), "stop"))
	}
}

// runCSBS runs the csbs binary and returns its output and whether it
// succeeded.
func runCSBS(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return string(out), err == nil
}

// TestDamagedRepository flips bytes in a pack: verify names the backup it
// affects, quarantines the damaged chunks and exits non-zero, and a restore
// then fails before it writes anything, naming the disk and the offsets.
func TestDamagedRepository(t *testing.T) {
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 24*mib)
	e.start()
	_, id := e.protect(project, serverID, map[string]any{"backup_name": "precious"})
	e.waitStatus(project, id, 60*time.Second, "available")
	if out, ok := runCSBS(t, "repo", "verify", "--data-dir", e.dataDir); !ok || !strings.Contains(out, "no damage") {
		t.Fatalf("verify of a healthy repository: %v\n%s", ok, out)
	}
	// GC beside the running service removes nothing a backup needs (it
	// consolidates the index files the rest of this test reads).
	if out, ok := runCSBS(t, "repo", "gc", "--data-dir", e.dataDir); !ok || !strings.Contains(out, "removed 0 packs") {
		t.Fatalf("csbs repo gc beside csbs serve: %v\n%s", ok, out)
	}
	e.stop(syscall.SIGTERM)

	packs, _ := filepath.Glob(filepath.Join(e.dataDir, "repository", "data", "*", "*"))
	if len(packs) == 0 {
		t.Fatal("no pack files")
	}
	for _, p := range packs {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		for off := int64(4096 + 100); off < fi.Size()*3/4; off += mib {
			b := make([]byte, 64)
			f.ReadAt(b, off)
			for i := range b {
				b[i] ^= 0x5a
			}
			f.WriteAt(b, off)
		}
		f.Close()
	}
	out, ok := runCSBS(t, "repo", "verify", "--data-dir", e.dataDir)
	t.Logf("csbs repo verify:\n%s", out)
	if ok || !strings.Contains(out, id) || !strings.Contains(out, "precious") || !strings.Contains(out, serverID) {
		t.Fatalf("verify of a damaged repository (ok=%v) does not name backup %s:\n%s", ok, id, out)
	}

	e.start()
	scribble(t, paths[0])
	scribbled := fileHash(t, paths[0])
	rs := e.waitRestore(project, e.startRestore(project, e.restoreBody("", id, serverID, true)), 60*time.Second)
	reason := fmt.Sprint(rs["resources_reason"])
	vol := e.inv.Servers[0].Volumes[0].ID
	t.Logf("resources_reason: %s", reason)
	// verify quarantined the damaged chunks: the restore fails before it
	// writes, naming the disk and every offset it cannot restore.
	m := regexp.MustCompile(`nothing was written: .* at offsets? (\d+)`).FindStringSubmatch(reason)
	if rs["status"] != "fail" || m == nil || !strings.Contains(reason, vol) || !strings.Contains(reason, "damaged") {
		t.Fatalf("restore from a damaged pack: status %v, reason %s", rs["status"], reason)
	}
	if st := e.item(project, id)["status"]; st != "available" {
		t.Fatalf("after a failed restore the backup is %v", st)
	}
	if fileHash(t, paths[0]) != scribbled {
		t.Fatal("a restore that could not finish wrote the disk")
	}
}

// TestRepositoryOnlyRestore deletes the database: the repository and its
// password file alone list the backups and restore them byte-exactly.
func TestRepositoryOnlyRestore(t *testing.T) {
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 16*mib, 8*mib)
	e.start()
	_, id := e.protect(project, serverID, map[string]any{"backup_name": "keepsake"})
	e.waitStatus(project, id, 60*time.Second, "available")
	want := hashes(t, paths)
	e.stop(syscall.SIGTERM)
	dbs, _ := filepath.Glob(filepath.Join(e.dataDir, "*.db*"))
	if len(dbs) == 0 {
		t.Fatalf("no database files in %s", e.dataDir)
	}
	for _, p := range dbs {
		os.Remove(p)
	}
	repoFlags := []string{"--repository-path", filepath.Join(e.dataDir, "repository"), "--password-file", filepath.Join(e.dataDir, "repository.key")}

	out, ok := runCSBS(t, append([]string{"repo", "ls"}, repoFlags...)...)
	if !ok || !strings.Contains(out, id) || !strings.Contains(out, "keepsake") {
		t.Fatalf("repo ls:\n%s", out)
	}
	dir := t.TempDir()
	out, ok = runCSBS(t, append([]string{"repo", "restore", id, "--target-dir", dir}, repoFlags...)...)
	if !ok {
		t.Fatalf("repo restore: %s", out)
	}
	for i, v := range e.inv.Servers[0].Volumes {
		if got := fileHash(t, filepath.Join(dir, v.ID+".img")); got != want[i] {
			t.Fatalf("disk %s restored from the repository alone: %s, backed up %s", v.ID, got, want[i])
		}
	}
	one := filepath.Join(dir, "one.img")
	vol := e.inv.Servers[0].Volumes[1].ID
	out, ok = runCSBS(t, "repo", "restore", strings.ReplaceAll(id, "-", ""), "--volume", vol, "--target", one, "--sha256", "--data-dir", e.dataDir)
	if !ok || !strings.Contains(out, want[1]) || fileHash(t, one) != want[1] {
		t.Fatalf("repo restore --volume: %s", out)
	}
	if out, ok := runCSBS(t, "repo", "restore", id, "--target", one, "--data-dir", e.dataDir); ok || !strings.Contains(out, vol) {
		t.Fatalf("repo restore of a two-disk backup to one file: %v %s", ok, out)
	}
}
