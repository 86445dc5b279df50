package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape reads /metrics into series → value ("name{labels}" as written).
func (e *env) scrape() map[string]float64 {
	e.t.Helper()
	res, err := http.Get(e.base + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		b, _ := io.ReadAll(res.Body)
		e.t.Fatalf("GET /metrics: %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			e.t.Fatalf("metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// TestMetrics scrapes /metrics (no token needed, even in builtin mode)
// before and after a backup and a policy: the counters moved, the gauges
// of stored state are there, routes are patterns, not paths.
func TestMetrics(t *testing.T) {
	e := newEnv(t, identityConfig(t, "")...)
	e.addServer(serverID, project, "ACTIVE", 8*mib)
	e.start()
	before := e.scrape()
	for _, name := range []string{"csbs_backups_started_total", "csbs_backups_succeeded_total", "csbs_backups_failed_total",
		"csbs_restores_started_total", "csbs_backup_read_bytes_total", "csbs_backup_stored_bytes_total",
		"csbs_restored_bytes_total", "csbs_jobs_queued", "csbs_jobs_running", "csbs_jobs_oldest_queued_age_seconds",
		"csbs_repository_size_bytes"} {
		if _, ok := before[name]; !ok {
			t.Errorf("a fresh service exports no %s", name)
		}
	}
	if before["csbs_backups_started_total"] != 0 {
		t.Errorf("backups started before any: %v", before["csbs_backups_started_total"])
	}

	tok, _ := login(t, http.DefaultClient, e.base, passwordAuth(byName("alice", "Default", alicePW),
		map[string]any{"project": map[string]any{"id": project}}))
	r := call(t, http.DefaultClient, "POST", e.base+"/v1/"+project+"/providers/"+provider+"/resources/"+serverID+"/action",
		tok, map[string]any{"protect": map[string]any{"backup_name": "m1"}})
	if r.status != 200 {
		t.Fatalf("protect: %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(60 * time.Second)
	var after map[string]float64
	for {
		after = e.scrape()
		if after["csbs_backups_succeeded_total"]+after["csbs_backups_failed_total"] >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tests := []struct {
		series string
		ok     func(v float64) bool
		want   string
	}{
		{"csbs_backups_started_total", eq(1), "1"},
		{"csbs_backups_succeeded_total", eq(1), "1"},
		{"csbs_backups_failed_total", eq(0), "0"},
		{`csbs_jobs_finished_total{kind="protect",result="succeeded"}`, eq(1), "1"},
		{"csbs_backup_read_bytes_total", func(v float64) bool { return v >= 8*mib }, ">= the disk's 8 MiB"},
		{"csbs_backup_stored_bytes_total", func(v float64) bool { return v > 0 && v < 8*mib }, "between 0 and 8 MiB (compressed, holes skipped)"},
		{`csbs_http_requests_total{code="200",method="POST",route="/v1/{project_id}/providers/{provider_id}/resources/{resource_id}/action"}`, eq(1), "1"},
		{`csbs_http_requests_total{code="201",method="POST",route="/v3/auth/tokens"}`, eq(1), "1"},
		{"csbs_jobs_queued", eq(0), "0"},
	}
	for _, tc := range tests {
		if v, ok := after[tc.series]; !ok || !tc.ok(v) {
			t.Errorf("after a backup: %s = %v (present %v), want %s", tc.series, v, ok, tc.want)
		}
	}
	for series := range after {
		if strings.Contains(series, project) && strings.HasPrefix(series, "csbs_http") {
			t.Errorf("a request series names a raw path, not a route pattern: %s", series)
		}
	}

	// Every scheduled operation of a policy exports its next fire time.
	r = call(t, http.DefaultClient, "POST", e.base+"/v1/"+project+"/policies", tok,
		polBody("nightly", true, "FREQ=DAILY;BYHOUR=2;BYMINUTE=0", map[string]any{"max_backups": 2}, serverID))
	if r.status != 200 {
		t.Fatalf("create policy: %d %s", r.status, r.body)
	}
	policyID := regexp.MustCompile(`"id":\s*"([^"]+)"`).FindSubmatch(r.body)
	found := false
	for series, v := range e.scrape() {
		if strings.HasPrefix(series, "csbs_policy_next_fire_timestamp_seconds{") && strings.Contains(series, string(policyID[1])) {
			found = true
			if next := time.Unix(int64(v), 0); next.Before(time.Now()) || next.After(time.Now().Add(25*time.Hour)) {
				t.Errorf("next fire of a daily policy at %v", next)
			}
		}
	}
	if !found {
		t.Errorf("no csbs_policy_next_fire_timestamp_seconds for policy %s", policyID[1])
	}

	// The logs: every request line has a request_id, every job line a
	// job_id, and no secret appears (passwords, tokens, repository key).
	e.stop(15) // SIGTERM: flush
	log := e.log()
	key, err := os.ReadFile(filepath.Join(e.dataDir, "repository.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{alicePW, tok, strings.TrimSpace(string(key))} {
		if strings.Contains(log, secret) {
			t.Errorf("the log contains a secret (%d characters)", len(secret))
		}
	}
	var requests, jobs int
	for _, l := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(l, "msg=request "):
			requests++
			if !strings.Contains(l, "request_id=") {
				t.Errorf("request line without request_id: %s", l)
			}
		case strings.Contains(l, `msg="job `):
			jobs++
			if !strings.Contains(l, "job_id=") {
				t.Errorf("job line without job_id: %s", l)
			}
		}
	}
	if requests == 0 || jobs == 0 {
		t.Errorf("log has %d request lines and %d job lines; want some of each:\n%s", requests, jobs, tail(log, 3000))
	}
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
