// Package metrics exports what an operator alerts on, in the Prometheus
// text format at GET /metrics: HTTP requests by route, jobs started and
// finished, bytes backed up and restored, the job queue, the repository's
// size and the scheduler's next fire times. Every name starts with csbs_.
//
// The collectors live on a private registry (no global state), so each
// Metrics — one per server, one per test — counts from zero. Counters are
// fed by the API, the job runner and the service through small methods;
// gauges of stored state are read from the store at scrape time.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/csbs/csbs/internal/store"
)

// Job kinds with counters of their own: a backup of one server and a
// restore (the kinds of internal/service).
const (
	kindProtect = "protect"
	kindRestore = "restore"
)

// Queue is the state read at scrape time. store.Store satisfies it.
type Queue interface {
	// CountJobs counts the jobs with status.
	CountJobs(ctx context.Context, status string) (int, error)
	// OldestJob is the creation time of the oldest job with status; the
	// zero time when there is none.
	OldestJob(ctx context.Context, status string) (time.Time, error)
	// DueOperations lists the enabled scheduled operations whose next fire
	// time is at or before t; called with a far future t it lists them all.
	DueOperations(ctx context.Context, t time.Time) ([]store.DueOperation, error)
}

// Config wires a Metrics. Every field is optional: what is missing is not
// exported.
type Config struct {
	Queue Queue
	// RepoSize returns the bytes the repository holds. It walks the
	// repository, so its result is cached for SizeTTL.
	RepoSize func(ctx context.Context) (int64, error)
	// SizeTTL is how long a repository size is reused; default (and
	// minimum) 30s.
	SizeTTL time.Duration
	// KeptClones measures the clones the local compute driver keeps for
	// the next incrementals (package compute/local): how many, their
	// apparent size, and the bytes only they hold. Read at every scrape.
	KeptClones func() (KeptClones, error)
	// Log receives the errors of scrape-time reads (a failed read leaves
	// its gauge out of that scrape and counts csbs_scrape_errors_total).
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Damaged counts the backups whose last verification found them
	// damaged (store.Store.CountDamaged); nil: not exported.
	Damaged func(ctx context.Context) (int, error)
	// LastVerify tells the last verification run of this process: when it
	// started, the bytes it read and authenticated, how long it took (zero
	// at: none yet); nil: not exported.
	LastVerify func() (at time.Time, bytes int64, took time.Duration)
}

// KeptClones is the cost of the local driver's kept clones.
type KeptClones struct {
	Count          int
	ApparentBytes  int64
	ExclusiveBytes int64
}

// Metrics holds the collectors. Its methods are safe for concurrent use
// and cheap: they are called on every request and job.
type Metrics struct {
	reg *prometheus.Registry

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	started  *prometheus.CounterVec // by job kind
	finished *prometheus.CounterVec // by job kind and result
	duration *prometheus.HistogramVec

	backupsStarted, backupsSucceeded, backupsFailed    prometheus.Counter
	restoresStarted, restoresSucceeded, restoresFailed prometheus.Counter

	bytesRead, bytesStored, bytesRestored prometheus.Counter
}

// New returns the metrics of one server, registered on a registry of its
// own together with the Go runtime and process collectors.
func New(c Config) *Metrics {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.SizeTTL < 30*time.Second {
		c.SizeTTL = 30 * time.Second
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csbs_http_requests_total",
			Help: "HTTP requests answered, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "csbs_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csbs_jobs_started_total",
			Help: "Job runs started, by kind (protect, restore, delete); a run resumed after a crash counts again.",
		}, []string{"kind"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "csbs_jobs_finished_total",
			Help: "Jobs finished, by kind and result (succeeded, failed).",
		}, []string{"kind", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "csbs_job_duration_seconds",
			Help:    "Duration of a job run that finished, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.1, 4, 10), // 0.1 s … 7 h
		}, []string{"kind"}),
		backupsStarted:    counter("csbs_backups_started_total", "Backups of a server started (job runs, so a run resumed after a crash counts again)."),
		backupsSucceeded:  counter("csbs_backups_succeeded_total", "Backups of a server that ended available."),
		backupsFailed:     counter("csbs_backups_failed_total", "Backups of a server that ended in error."),
		restoresStarted:   counter("csbs_restores_started_total", "Restores started (job runs)."),
		restoresSucceeded: counter("csbs_restores_succeeded_total", "Restores that ended successfully."),
		restoresFailed:    counter("csbs_restores_failed_total", "Restores that failed."),
		bytesRead:         counter("csbs_backup_read_bytes_total", "Bytes of disks read by backups that succeeded."),
		bytesStored:       counter("csbs_backup_stored_bytes_total", "Bytes written to the repository by backups that succeeded, after deduplication and compression."),
		bytesRestored:     counter("csbs_restored_bytes_total", "Bytes of disks written by restores."),
	}
	m.reg.MustRegister(m.requests, m.latency, m.started, m.finished, m.duration,
		m.backupsStarted, m.backupsSucceeded, m.backupsFailed,
		m.restoresStarted, m.restoresSucceeded, m.restoresFailed,
		m.bytesRead, m.bytesStored, m.bytesRestored,
		newStateCollector(c),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is the private registry, for tests that gather directly.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Request counts an answered request. route is the pattern of the mux
// ("/v1/{project_id}/checkpoint_items"), never the raw path, so that the
// number of series stays bounded; "" (no route matched) becomes "other".
func (m *Metrics) Request(route, method string, code int, d time.Duration) {
	if route == "" {
		route = "other"
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
	default:
		method = "other" // methods are client-chosen strings
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route, method).Observe(d.Seconds())
}

// JobStarted counts a job run of kind.
func (m *Metrics) JobStarted(kind string) {
	m.started.WithLabelValues(kind).Inc()
	switch kind {
	case kindProtect:
		m.backupsStarted.Inc()
	case kindRestore:
		m.restoresStarted.Inc()
	}
}

// JobFinished counts a job that ended after d, failed when err is not nil.
func (m *Metrics) JobFinished(kind string, d time.Duration, err error) {
	result := "succeeded"
	if err != nil {
		result = "failed"
	}
	m.finished.WithLabelValues(kind, result).Inc()
	m.duration.WithLabelValues(kind).Observe(d.Seconds())
	switch {
	case kind == kindProtect && err == nil:
		m.backupsSucceeded.Inc()
	case kind == kindProtect:
		m.backupsFailed.Inc()
	case kind == kindRestore && err == nil:
		m.restoresSucceeded.Inc()
	case kind == kindRestore:
		m.restoresFailed.Inc()
	}
}

// BackedUp counts the bytes a successful backup read from the disks and
// stored in the repository (after deduplication and compression).
func (m *Metrics) BackedUp(read, stored int64) {
	m.bytesRead.Add(float64(max(read, 0)))
	m.bytesStored.Add(float64(max(stored, 0)))
}

// Restored counts bytes written to a disk by a restore.
func (m *Metrics) Restored(n int64) { m.bytesRestored.Add(float64(max(n, 0))) }

// stateCollector reads the gauges of stored state at scrape time.
type stateCollector struct {
	c Config

	queued, running, oldest, repoSize, nextFire, errors *prometheus.Desc
	damaged, verifyAt, verifyRate, verifyBytes          *prometheus.Desc
	kept, keptApparent, keptExclusive                   *prometheus.Desc

	mu         sync.Mutex // serializes size walks; guards the fields below
	size       int64
	sizeAt     time.Time
	scrapeErrs map[string]float64
}

func newStateCollector(c Config) *stateCollector {
	return &stateCollector{
		c:        c,
		queued:   prometheus.NewDesc("csbs_jobs_queued", "Jobs waiting for a worker.", nil, nil),
		running:  prometheus.NewDesc("csbs_jobs_running", "Jobs being worked on (or whose worker died and whose lease has not run out).", nil, nil),
		oldest:   prometheus.NewDesc("csbs_jobs_oldest_queued_age_seconds", "Age of the oldest job waiting for a worker; 0 when none waits.", nil, nil),
		repoSize: prometheus.NewDesc("csbs_repository_size_bytes", "Bytes of every file of the backup repository (computed at most every 30 s).", nil, nil),
		nextFire: prometheus.NewDesc("csbs_policy_next_fire_timestamp_seconds", "Unix time of the next scheduled run of each enabled scheduled operation of a policy.",
			[]string{"project_id", "policy_id", "operation_id"}, nil),
		errors:        prometheus.NewDesc("csbs_scrape_errors_total", "Reads of stored state that failed while serving /metrics, by source.", []string{"source"}, nil),
		damaged:       prometheus.NewDesc("csbs_backups_damaged", "Backups (not deleted) whose last verification found data that cannot be restored.", nil, nil),
		verifyAt:      prometheus.NewDesc("csbs_verify_last_run_timestamp_seconds", "Unix time the last verification run of this process started (absent before the first).", nil, nil),
		verifyRate:    prometheus.NewDesc("csbs_verify_last_run_bytes_per_second", "Throughput of the last verification run of this process: plaintext bytes read and authenticated per second.", nil, nil),
		verifyBytes:   prometheus.NewDesc("csbs_verify_last_run_bytes", "Plaintext bytes the last verification run of this process read and authenticated.", nil, nil),
		kept:          prometheus.NewDesc("csbs_kept_clones", "Reflink clones the local compute driver keeps for the next incremental backups (one per disk backed up).", nil, nil),
		keptApparent:  prometheus.NewDesc("csbs_kept_clones_apparent_bytes", "Sum of the sizes of the kept clones (what they would cost as copies; shared blocks cost nothing).", nil, nil),
		keptExclusive: prometheus.NewDesc("csbs_kept_clones_exclusive_bytes", "Bytes only the kept clones hold (blocks the disks rewrote since their last backup): the space turning compute.local.keep_clones off would free.", nil, nil),
		scrapeErrs:    map[string]float64{},
	}
}

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.queued, s.running, s.oldest, s.repoSize, s.nextFire, s.errors, s.damaged, s.verifyAt, s.verifyRate, s.verifyBytes, s.kept, s.keptApparent, s.keptExclusive} {
		ch <- d
	}
}

// farFuture lists every scheduled operation through DueOperations.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if q := s.c.Queue; q != nil {
		if n, err := q.CountJobs(ctx, store.JobQueued); s.ok("jobs", err) {
			gauge(s.queued, float64(n))
		}
		if n, err := q.CountJobs(ctx, store.JobRunning); s.ok("jobs", err) {
			gauge(s.running, float64(n))
		}
		if at, err := q.OldestJob(ctx, store.JobQueued); s.ok("jobs", err) {
			age := 0.0
			if !at.IsZero() {
				age = max(s.c.Now().Sub(at).Seconds(), 0)
			}
			gauge(s.oldest, age)
		}
		if ops, err := q.DueOperations(ctx, farFuture); s.ok("policies", err) {
			for _, op := range ops {
				gauge(s.nextFire, float64(op.NextFire.UnixMilli())/1e3, op.ProjectID, op.PolicyID, op.OperationID)
			}
		}
	}
	if s.c.RepoSize != nil {
		if n, err := s.repositorySize(ctx); s.ok("repository", err) {
			gauge(s.repoSize, float64(n))
		}
	}
	if s.c.Damaged != nil {
		if n, err := s.c.Damaged(ctx); s.ok("verifications", err) {
			gauge(s.damaged, float64(n))
		}
	}
	if s.c.LastVerify != nil {
		if at, n, took := s.c.LastVerify(); !at.IsZero() {
			gauge(s.verifyAt, float64(at.UnixMilli())/1e3)
			gauge(s.verifyBytes, float64(n))
			if took > 0 {
				gauge(s.verifyRate, float64(n)/took.Seconds())
			}
		}
	}
	if s.c.KeptClones != nil {
		if k, err := s.c.KeptClones(); s.ok("kept_clones", err) {
			gauge(s.kept, float64(k.Count))
			gauge(s.keptApparent, float64(k.ApparentBytes))
			gauge(s.keptExclusive, float64(k.ExclusiveBytes))
		}
	}
	s.mu.Lock()
	for src, n := range s.scrapeErrs {
		ch <- prometheus.MustNewConstMetric(s.errors, prometheus.CounterValue, n, src)
	}
	s.mu.Unlock()
}

// ok records err, if any, against source and reports whether there was none.
func (s *stateCollector) ok(source string, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, seen := s.scrapeErrs[source]; !seen {
		s.scrapeErrs[source] = 0 // export the series from the first scrape on
	}
	if err == nil {
		return true
	}
	s.scrapeErrs[source]++
	s.c.Log.Warn("metrics: reading stored state failed", "source", source, "err", err)
	return false
}

// repositorySize returns the cached size, walking the repository again
// when the cache is older than SizeTTL. Concurrent scrapes wait for one
// walk instead of each starting their own.
func (s *stateCollector) repositorySize(ctx context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.c.Now()
	if !s.sizeAt.IsZero() && now.Sub(s.sizeAt) < s.c.SizeTTL {
		return s.size, nil
	}
	n, err := s.c.RepoSize(ctx)
	if err != nil {
		return 0, err
	}
	s.size, s.sizeAt = n, now
	return n, nil
}
