package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// operationLogs returns the operation logs of a query (one page).
func (e *env) operationLogs(projectID, query string) []map[string]any {
	e.t.Helper()
	r := e.do("GET", "/v1/"+projectID+"/operation_logs?"+query, nil)
	if r.status != 200 {
		e.t.Fatalf("operation logs %s: %d %s", query, r.status, r.body)
	}
	var out struct {
		Logs []map[string]any `json:"operation_logs"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil || out.Logs == nil {
		e.t.Fatalf("operation logs: %v: %s", err, r.body)
	}
	return out.Logs
}

// waitLog polls an operation log until its status is one of want.
func (e *env) waitLog(projectID, id string, want ...string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last map[string]any
	for time.Now().Before(deadline) {
		r := e.do("GET", "/v1/"+projectID+"/operation_logs/"+id, nil)
		if r.status != 200 {
			e.t.Fatalf("operation log %s: %d %s", id, r.status, r.body)
		}
		last = r.json(e.t)["operation_log"].(map[string]any)
		for _, w := range want {
			if last["status"] == w {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("operation log %s did not reach %v; last %v", id, want, last)
	return nil
}

// logIDs are the ids of logs.
func logIDs(logs []map[string]any) []string {
	var ids []string
	for _, l := range logs {
		ids = append(ids, l["id"].(string))
	}
	return ids
}

// TestOperationLogs shows backups and deletes as jobs: a backup whose disk
// vanished is a failed job whose reason names the disk; jobs filter by
// status, type, checkpoint and plan, page, and failed ones can be deleted
// one by one or all at once.
func TestOperationLogs(t *testing.T) {
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 4*mib, 4*mib)
	e.start()
	base := "/v1/" + project + "/operation_logs"

	okCP, okItem := e.protect(project, serverID, nil)
	e.waitStatus(project, okItem, 60*time.Second, "available")
	logs := e.operationLogs(project, "checkpoint_id="+okCP)
	if len(logs) != 1 {
		t.Fatalf("logs of checkpoint %s: %v", okCP, logs)
	}
	ok := e.waitLog(project, logs[0]["id"].(string), "success")
	if ok["operation_type"] != "protect" || ok["checkpoint_item_id"] != okItem || ok["project_id"] != project ||
		ok["error_info"] != nil || ok["started_at"] == nil || ok["ended_at"] == nil || !strings.HasPrefix(ok["plan_id"].(string), "fake_") {
		t.Errorf("successful backup job: %v", ok)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000000", ok["ended_at"].(string)); err != nil {
		t.Errorf("ended_at: %v", err)
	}

	// The second disk vanishes: the backup fails, and so does its job, naming the disk.
	os.Remove(paths[1])
	failCP, failItem := e.protect(project, serverID, nil)
	e.waitStatus(project, failItem, 60*time.Second, "error")
	failed := e.operationLogs(project, "status=error")
	if len(failed) != 1 || failed[0]["checkpoint_id"] != failCP {
		t.Fatalf("failed jobs: %v", failed)
	}
	failID := failed[0]["id"].(string)
	f := e.waitLog(project, failID, "error")
	info, _ := f["error_info"].(string)
	if !strings.Contains(info, "srv-9506-disk1") || !strings.Contains(info, paths[1]) {
		t.Errorf("error_info %q does not name the vanished disk srv-9506-disk1 at %s", info, paths[1])
	}

	// A delete is a job too.
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+okCP, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e.waitStatus(project, okItem, 30*time.Second, "gone")
	dels := e.operationLogs(project, "operation_type=delete")
	if len(dels) != 1 || dels[0]["checkpoint_id"] != okCP || dels[0]["checkpoint_item_id"] != okItem {
		t.Fatalf("delete jobs: %v", dels)
	}
	e.waitLog(project, dels[0]["id"].(string), "success")

	// Filters, newest first.
	all := logIDs(e.operationLogs(project, ""))
	want := []string{dels[0]["id"].(string), failID, ok["id"].(string)}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Errorf("all logs: %v, want %v", all, want)
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"operation_type=protect", want[1:]},
		{"operation_type=restore", nil},
		{"status=success", []string{want[0], want[2]}},
		{"status=success&operation_type=protect", want[2:]},
		{"checkpoint_id=" + okCP, []string{want[0], want[2]}},
		{"plan_id=" + ok["plan_id"].(string), want[2:]},
		{"status=running", nil},
		{"limit=1", want[:1]},
		{"limit=2&offset=1", want[1:]},
		{"marker=" + want[0], want[1:]},
	} {
		if got := logIDs(e.operationLogs(project, tc.query)); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v", tc.query, got, tc.want)
		}
	}
	if got := e.operationLogs("0123456789abcdef0123456789abcdef", ""); len(got) != 0 {
		t.Errorf("another project sees %v", got)
	}
	// Paging links: follow next to the end.
	var seen []string
	next := base + "?limit=1"
	for next != "" {
		r := e.do("GET", next, nil)
		var page struct {
			Logs  []map[string]any             `json:"operation_logs"`
			Links []struct{ Rel, Href string } `json:"operation_logs_links"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &page) != nil {
			t.Fatalf("page %s: %d %s", next, r.status, r.body)
		}
		seen = append(seen, logIDs(page.Logs)...)
		next = ""
		if len(page.Links) > 0 && page.Links[0].Rel == "next" {
			next = page.Links[0].Href
		}
		if len(seen) > 5 {
			t.Fatal("paging does not end")
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("following next links: %v, want %v", seen, want)
	}

	for _, tc := range []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"unknown status", "GET", base + "?status=failed", 400, "CSBS.9001"},
		{"unknown type", "GET", base + "?operation_type=gc", 400, "CSBS.9001"},
		{"bad limit", "GET", base + "?limit=0", 400, "CSBS.9001"},
		{"bad marker", "GET", base + "?marker=" + newUUID(), 400, "CSBS.9001"},
		{"unknown log", "GET", base + "/" + newUUID(), 404, "CSBS.6040"},
		{"another project's log", "GET", "/v1/0123456789abcdef0123456789abcdef/operation_logs/" + failID, 404, "CSBS.6040"},
		{"delete a successful job", "DELETE", base + "/" + want[2], 400, "CSBS.9001"},
		{"delete an unknown job", "DELETE", base + "/" + newUUID(), 404, "CSBS.6040"},
		{"delete all without status", "DELETE", base, 400, "CSBS.9001"},
		{"delete all successful", "DELETE", base + "?status=success", 400, "CSBS.9001"},
	} {
		wantError(t, tc.name, e.do(tc.method, tc.path, nil), tc.status, tc.code)
	}

	// Delete one failed job.
	if r := e.do("DELETE", base+"/"+failID, nil); r.status != 204 {
		t.Fatalf("delete failed job: %d %s", r.status, r.body)
	}
	wantError(t, "the deleted job", e.do("GET", base+"/"+failID, nil), 404, "CSBS.6040")
	if it := e.item(project, failItem); it == nil || it["status"] != "error" {
		t.Errorf("the failed backup itself should stay: %v", it)
	}

	// Delete all failed jobs.
	for range 2 {
		_, id := e.protect(project, serverID, nil)
		e.waitStatus(project, id, 60*time.Second, "error")
	}
	if n := len(e.operationLogs(project, "status=error")); n != 2 {
		t.Fatalf("%d failed jobs, want 2", n)
	}
	if r := e.do("DELETE", base+"?status=error", nil); r.status != 204 {
		t.Fatalf("delete all failed jobs: %d %s", r.status, r.body)
	}
	if n := len(e.operationLogs(project, "status=error")); n != 0 {
		t.Errorf("%d failed jobs after Delete All", n)
	}
	if n := len(e.operationLogs(project, "status=success")); n != 2 {
		t.Errorf("%d successful jobs after Delete All, want 2", n)
	}
}
