package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/store"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestCounters(t *testing.T) {
	m := New(Config{Log: quiet()})
	m.JobStarted("protect")
	m.JobStarted("protect")
	m.JobFinished("protect", time.Second, nil)
	m.JobFinished("protect", time.Second, errors.New("boom"))
	m.JobStarted("restore")
	m.JobFinished("restore", time.Second, nil)
	m.JobStarted("delete")
	m.BackedUp(100, 40)
	m.BackedUp(50, -1) // never decreases
	m.Restored(70)
	m.Request("/v1/{project_id}/checkpoint_items", "GET", 200, time.Millisecond)
	m.Request("", "BREW", 404, time.Millisecond)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		"csbs_backups_started_total 2",
		"csbs_backups_succeeded_total 1",
		"csbs_backups_failed_total 1",
		"csbs_restores_started_total 1",
		"csbs_restores_succeeded_total 1",
		"csbs_restores_failed_total 0",
		`csbs_jobs_started_total{kind="delete"} 1`,
		`csbs_jobs_finished_total{kind="protect",result="failed"} 1`,
		"csbs_backup_read_bytes_total 150",
		"csbs_backup_stored_bytes_total 40",
		"csbs_restored_bytes_total 70",
		`csbs_http_requests_total{code="200",method="GET",route="/v1/{project_id}/checkpoint_items"} 1`,
		`csbs_http_requests_total{code="404",method="other",route="other"} 1`,
		`csbs_http_request_duration_seconds_count{method="GET",route="/v1/{project_id}/checkpoint_items"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("scrape lacks %q:\n%s", want, grep(body, "csbs_"))
		}
	}
}

func TestStateAtScrape(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	now := time.Now().Truncate(time.Microsecond)
	for _, j := range []*store.Job{
		{Kind: "protect", ProjectID: "p", CreatedAt: now.Add(-90 * time.Second)},
		{Kind: "protect", ProjectID: "p", CreatedAt: now.Add(-10 * time.Second)},
		{Kind: "delete", ProjectID: "p", Status: store.JobRunning, CreatedAt: now.Add(-time.Hour)},
	} {
		if err := s.InsertJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	walks := 0
	clock := now
	m := New(Config{Queue: s, Log: quiet(), Now: func() time.Time { return clock },
		RepoSize: func(context.Context) (int64, error) { walks++; return int64(1000 * walks), nil }})

	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	body := scrape()
	for _, want := range []string{
		"csbs_jobs_queued 2\n",
		"csbs_jobs_running 1\n",
		"csbs_jobs_oldest_queued_age_seconds 90\n",
		"csbs_repository_size_bytes 1000\n",
		`csbs_scrape_errors_total{source="jobs"} 0`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q:\n%s", want, grep(body, "csbs_"))
		}
	}
	clock = now.Add(29 * time.Second)
	if body := scrape(); !strings.Contains(body, "csbs_repository_size_bytes 1000\n") || walks != 1 {
		t.Errorf("size walked again within 30 s (%d walks): %s", walks, grep(body, "csbs_repository"))
	}
	clock = now.Add(31 * time.Second)
	if body := scrape(); !strings.Contains(body, "csbs_repository_size_bytes 2000\n") {
		t.Errorf("size not walked again after 30 s: %s", grep(body, "csbs_repository"))
	}
}

// TestScrapeError: a source that fails leaves its gauge out and is
// counted; the rest of the scrape is served.
func TestScrapeError(t *testing.T) {
	m := New(Config{Log: quiet(), RepoSize: func(context.Context) (int64, error) { return 0, errors.New("disk gone") }})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	if rec.Code != 200 || strings.Contains(body, "csbs_repository_size_bytes ") ||
		!strings.Contains(body, `csbs_scrape_errors_total{source="repository"} 1`) {
		t.Errorf("scrape with a failing repository: %d\n%s", rec.Code, grep(body, "csbs_"))
	}
}

func grep(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestVerifyGauges: the damaged backups are counted at scrape time, and the
// last verification run's time, bytes and throughput are exported once
// there is one.
func TestVerifyGauges(t *testing.T) {
	ctx := context.Background()
	var at time.Time
	m := New(Config{Log: quiet(),
		Damaged:    func(context.Context) (int, error) { return 3, nil },
		LastVerify: func() (time.Time, int64, time.Duration) { return at, 300 << 20, 2 * time.Second },
	})
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil).WithContext(ctx))
		return rec.Body.String()
	}
	body := scrape()
	if !strings.Contains(body, "csbs_backups_damaged 3") || strings.Contains(body, "csbs_verify_last_run_timestamp_seconds") {
		t.Fatalf("before any verification:\n%s", body)
	}
	at = time.Unix(1700000000, 0)
	body = scrape()
	for _, want := range []string{
		"csbs_verify_last_run_timestamp_seconds 1.7e+09",
		"csbs_verify_last_run_bytes 3.145728e+08",
		"csbs_verify_last_run_bytes_per_second 1.572864e+08",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in\n%s", want, body)
		}
	}
}

// TestKeptClones: the kept clones' cost is read at scrape time; a failed
// read leaves the gauges out and counts a scrape error.
func TestKeptClones(t *testing.T) {
	fail := false
	m := New(Config{Log: quiet(), KeptClones: func() (KeptClones, error) {
		if fail {
			return KeptClones{}, errors.New("no FIEMAP")
		}
		return KeptClones{Count: 2, ApparentBytes: 3 << 30, ExclusiveBytes: 5 << 20}, nil
	}})
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	body := scrape()
	for _, want := range []string{"csbs_kept_clones 2", "csbs_kept_clones_apparent_bytes 3.221225472e+09",
		"csbs_kept_clones_exclusive_bytes 5.24288e+06", `csbs_scrape_errors_total{source="kept_clones"} 0`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	fail = true
	body = scrape()
	if strings.Contains(body, "csbs_kept_clones ") || !strings.Contains(body, `csbs_scrape_errors_total{source="kept_clones"} 1`) {
		t.Errorf("a failed read: gauges exported or error not counted:\n%s", body)
	}
}
