package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// cliResult is what a run of the CLI did.
type cliResult struct {
	code           int
	stdout, stderr string
}

// cli runs the csbs binary as a client with env (KEY=VALUE) added to a
// clean environment (no OS_* or CSBS_* of the test's own).
func cli(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OS_") && !strings.HasPrefix(kv, "CSBS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run csbs %v: %v", args, err)
	}
	return cliResult{code, out.String(), errb.String()}
}

func (r cliResult) must(t *testing.T, what string) cliResult {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

// TestCLI drives the service through the CLI only: a backup created with
// --wait ends available and prints the checkpoint_item as JSON; list prints
// an aligned table; a refused operation exits non-zero with the API's error
// code and message; the policy, restore, tag, quota and job nouns work.
func TestCLI(t *testing.T) {
	e := newEnv(t)
	e.addServer(serverID, project, "ACTIVE", 8*mib)
	e.start()
	conn := []string{"CSBS_ENDPOINT=" + e.base, "CSBS_PROJECT_ID=" + project}

	r := cli(t, conn, "backup", "create", "--server", serverID, "--name", "cli-1", "--wait", "-o", "json").must(t, "backup create --wait")
	var item map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &item); err != nil {
		t.Fatalf("backup create -o json printed no JSON object: %v\n%s", err, r.stdout)
	}
	if item["status"] != "available" || item["name"] != "cli-1" || item["resource_id"] != serverID {
		t.Errorf("backup create --wait printed status %v name %v resource %v; want available cli-1 %s",
			item["status"], item["name"], item["resource_id"], serverID)
	}
	ext, _ := item["extend_info"].(map[string]any)
	if ext == nil || ext["progress"] != 100.0 {
		t.Errorf("extend_info of the printed backup: %v", ext)
	}
	if !strings.Contains(r.stderr, "available") {
		t.Errorf("--wait (not a terminal) printed no plain progress lines ending available: %q", r.stderr)
	}
	id, _ := item["id"].(string)

	r = cli(t, conn, "backup", "list").must(t, "backup list")
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[1], id) || !strings.Contains(lines[1], "available") {
		t.Fatalf("backup list table:\n%s", r.stdout)
	}
	// Aligned: every column header starts where its values start.
	if col := strings.Index(lines[0], "STATUS"); col < 0 || !strings.HasPrefix(lines[1][col:], "available") {
		t.Errorf("STATUS column not aligned:\n%s", r.stdout)
	}

	r = cli(t, conn, "backup", "show", id, "-o", "json").must(t, "backup show")
	var shown map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || shown["id"] != id {
		t.Errorf("backup show -o json: %v\n%s", err, r.stdout)
	}

	r = cli(t, conn, "backup", "create", "--server", serverID, "--name", "cli-full", "--full", "--wait", "-o", "json").must(t, "backup create --full")
	var full struct {
		Status     string `json:"status"`
		ExtendInfo struct {
			Incremental bool `json:"incremental"`
		} `json:"extend_info"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &full); err != nil || full.Status != "available" || full.ExtendInfo.Incremental {
		t.Errorf("backup create --full: %v; status %q incremental %v, want available and full", err, full.Status, full.ExtendInfo.Incremental)
	}

	tests := []struct {
		name string
		args []string
		code string // in stderr
	}{
		{"unknown backup", []string{"backup", "show", "00000000-0000-0000-0000-000000000000"}, "CSBS.3001"},
		{"unknown server", []string{"backup", "create", "--server", "11111111-2222-3333-4444-555555555555", "--name", "x"}, "CSBS."},
		{"bad name", []string{"backup", "create", "--server", serverID, "--name", strings.Repeat("n", 300)}, "CSBS.9001"},
	}
	for _, tc := range tests {
		r := cli(t, conn, tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.code) {
			t.Errorf("%s: exit %d, stderr %q; want non-zero and %s", tc.name, r.code, r.stderr, tc.code)
		}
	}
	if r := cli(t, nil, "backup", "list"); r.code == 0 || !strings.Contains(r.stderr, "CSBS_ENDPOINT") {
		t.Errorf("no connection settings: exit %d, stderr %q; want a hint naming CSBS_ENDPOINT", r.code, r.stderr)
	}

	r = cli(t, conn, "tag", "add", "--backup", id, "env=prod").must(t, "tag add")
	r = cli(t, conn, "tag", "list", "--backup", id).must(t, "tag list")
	if !strings.Contains(r.stdout, "env") || !strings.Contains(r.stdout, "prod") {
		t.Errorf("tag list:\n%s", r.stdout)
	}
	r = cli(t, conn, "quota").must(t, "quota")
	if !strings.Contains(r.stdout, "TYPE") || !strings.Contains(r.stdout, "backup") {
		t.Errorf("quota:\n%s", r.stdout)
	}

	r = cli(t, conn, "policy", "create", "--name", "nightly", "--server", serverID,
		"--rrule", "FREQ=DAILY;BYHOUR=2;BYMINUTE=0", "--max-backups", "3", "-o", "json").must(t, "policy create")
	var pol map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &pol); err != nil || pol["name"] != "nightly" {
		t.Fatalf("policy create -o json: %v\n%s", err, r.stdout)
	}
	pid := pol["id"].(string)
	cli(t, conn, "policy", "update", pid, "--name", "nightly-2").must(t, "policy update")
	r = cli(t, conn, "policy", "list").must(t, "policy list")
	if !strings.Contains(r.stdout, "nightly-2") {
		t.Errorf("policy list after update:\n%s", r.stdout)
	}
	r = cli(t, conn, "policy", "execute", pid, "--wait").must(t, "policy execute --wait")
	if !strings.Contains(r.stdout, "available") {
		t.Errorf("policy execute --wait:\n%s", r.stdout)
	}
	cli(t, conn, "policy", "delete", pid).must(t, "policy delete")
	if r := cli(t, conn, "policy", "show", pid); r.code == 0 {
		t.Errorf("policy show of a deleted policy succeeded:\n%s", r.stdout)
	}

	r = cli(t, conn, "restore", "create", "--backup", id, "--wait", "-o", "json").must(t, "restore create --wait")
	var rs map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil || rs["status"] != "success" {
		t.Errorf("restore create --wait: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	r = cli(t, conn, "restore", "list").must(t, "restore list")
	if !strings.Contains(r.stdout, "success") {
		t.Errorf("restore list:\n%s", r.stdout)
	}
	r = cli(t, conn, "job", "list").must(t, "job list")
	if !strings.Contains(r.stdout, "TYPE") || len(strings.Split(strings.TrimSpace(r.stdout), "\n")) < 3 {
		t.Errorf("job list:\n%s", r.stdout)
	}

	cli(t, conn, "backup", "delete", id, "--wait").must(t, "backup delete --wait")
	if r := cli(t, conn, "backup", "show", id); r.code == 0 || !strings.Contains(r.stderr, "CSBS.3001") {
		t.Errorf("show after delete: exit %d %q", r.code, r.stderr)
	}
}

// TestCLIOpenStackAuth: with the OS_* variables the CLI authenticates at
// the builtin identity and uses the data-protect endpoint of the catalog;
// a wrong password exits non-zero without printing the password.
func TestCLIOpenStackAuth(t *testing.T) {
	e := newEnv(t, identityConfig(t, "")...)
	e.addServer(serverID, project, "ACTIVE", 4*mib)
	e.start()
	osEnv := []string{"OS_AUTH_URL=" + e.base + "/v3", "OS_USERNAME=alice", "OS_PASSWORD=" + alicePW,
		"OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_NAME=eu-de_alice", "OS_REGION_NAME=eu-de"}

	r := cli(t, osEnv, "backup", "create", "--server", serverID, "--name", "os-1", "--wait", "-o", "json").must(t, "backup create with OS_*")
	var item map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &item); err != nil || item["status"] != "available" {
		t.Fatalf("backup create with OS_*: %v\n%s", err, r.stdout)
	}
	r = cli(t, osEnv, "backup", "list").must(t, "backup list with OS_*")
	if !strings.Contains(r.stdout, item["id"].(string)) {
		t.Errorf("backup list with OS_*:\n%s", r.stdout)
	}

	bad := append(append([]string(nil), osEnv...), "OS_PASSWORD=wrong-Secret-guess")
	r = cli(t, bad, "backup", "list")
	if r.code == 0 || strings.Contains(r.stderr+r.stdout, "wrong-Secret-guess") || !strings.Contains(r.stderr, "401") {
		t.Errorf("wrong password: exit %d, stderr %q; want non-zero, a 401, and no password", r.code, r.stderr)
	}
	// Without a token the endpoint refuses: the API's code reaches the user.
	r = cli(t, []string{"CSBS_ENDPOINT=" + e.base, "CSBS_PROJECT_ID=" + project}, "backup", "list")
	if r.code == 0 || !strings.Contains(r.stderr, "APIGW.0301") {
		t.Errorf("no token: exit %d, stderr %q; want APIGW.0301", r.code, r.stderr)
	}
}
