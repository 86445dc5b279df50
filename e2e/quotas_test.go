package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// quotaOf returns the quota and use of one type of GET /quotas.
func (e *env) quotaOf(projectID, typ string) (quota, used int) {
	e.t.Helper()
	r := e.do("GET", "/v1/"+projectID+"/quotas", nil)
	var out struct {
		Quotas struct {
			Resources []struct {
				Type  string  `json:"type"`
				Unit  *string `json:"unit"`
				Quota *int    `json:"quota"`
				Used  *int    `json:"used"`
			} `json:"resources"`
		} `json:"quotas"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &out) != nil {
		e.t.Fatalf("quotas: %d %s", r.status, r.body)
	}
	for _, q := range out.Quotas.Resources {
		if q.Type == typ {
			if q.Quota == nil || q.Used == nil || (typ == "backup_capacity") != (q.Unit != nil && *q.Unit == "GB") {
				e.t.Fatalf("quota %s: %s", typ, r.body)
			}
			return *q.Quota, *q.Used
		}
	}
	e.t.Fatalf("quotas: no %s in %s", typ, r.body)
	return 0, 0
}

// TestQuotas reports quotas and their use after backups and deletes,
// refuses a backup over the quota with CSBS.9006 and creates nothing, and
// applies per-project overrides from the config file.
func TestQuotas(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) { testQuotas(t, db == "postgres") })
	}
}

func testQuotas(t *testing.T, postgres bool) {
	small := "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	full := "cccccccccccccccccccccccccccccccc"
	cfg := filepath.Join(t.TempDir(), "csbs.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`quotas:
  backups: 2
  projects:
    %s:
      backups: 1
    %s:
      backup_capacity_gb: 0
`, small, full)), 0o600)
	e := newEnv(t, "--config", cfg)
	if postgres {
		e.withPostgres()
	}
	e.addServer(serverID, project, "ACTIVE", 4*mib)
	smallServer, fullServer := newUUID(), newUUID()
	e.addServer(smallServer, small, "ACTIVE", 4*mib)
	e.addServer(fullServer, full, "ACTIVE", 4*mib)
	e.start()

	check := func(projectID string, backups, used, capacity, capUsed int) {
		t.Helper()
		if q, u := e.quotaOf(projectID, "backups"); q != backups || u != used {
			t.Errorf("%s backups: quota %d used %d, want %d and %d", projectID, q, u, backups, used)
		}
		if q, u := e.quotaOf(projectID, "backup_capacity"); q != capacity || u != capUsed {
			t.Errorf("%s backup_capacity: quota %d used %d, want %d and %d", projectID, q, u, capacity, capUsed)
		}
	}
	check(project, 2, 0, -1, 0)
	check(small, 1, 0, -1, 0)
	check(full, 2, 0, 0, 0)

	cp1, b1 := e.protect(project, serverID, nil)
	e.waitStatus(project, b1, 60*time.Second, "available")
	_, b2 := e.protect(project, serverID, nil)
	e.waitStatus(project, b2, 60*time.Second, "available")
	check(project, 2, 2, -1, 1) // a few MB round up to 1 GB

	protect := func(projectID, server string) resp {
		return e.do("POST", fmt.Sprintf("/v1/%s/providers/%s/resources/%s/action", projectID, provider, server),
			map[string]any{"protect": map[string]any{"backup_name": "over"}})
	}
	jobs := len(e.operationLogs(project, ""))
	wantError(t, "protect over the backups quota", protect(project, serverID), 400, "CSBS.9006")
	if n := e.count(project, ""); n != 2 {
		t.Errorf("%d backups after a refused protect, want 2", n)
	}
	if n := e.count(project, "name=over"); n != 0 {
		t.Errorf("the refused backup exists")
	}
	if n := len(e.operationLogs(project, "")); n != jobs {
		t.Errorf("%d jobs after a refused protect, want %d", n, jobs)
	}

	// A delete frees the quota.
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cp1, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e.waitStatus(project, b1, 30*time.Second, "gone")
	check(project, 2, 1, -1, 1)
	r := protect(project, serverID)
	if r.status != 200 {
		t.Fatalf("protect after a delete: %d %s", r.status, r.body)
	}

	// Per-project overrides.
	_, s1 := e.protect(small, smallServer, nil)
	e.waitStatus(small, s1, 60*time.Second, "available")
	wantError(t, "protect over an overridden backups quota", protect(small, smallServer), 400, "CSBS.9006")
	check(small, 1, 1, -1, 1)
	wantError(t, "protect with a capacity of 0 GB", protect(full, fullServer), 400, "CSBS.9006")
	check(full, 2, 0, 0, 0)
}
