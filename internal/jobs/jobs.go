// Package jobs runs the asynchronous work of the service — backups, deletes,
// restores, garbage collection — from the durable queue in the store.
//
// A worker claims a job with a lease and renews it (a heartbeat) every third
// of the lease while the job runs. A process that dies stops renewing; once
// the lease runs out, any process on the same database claims the job again
// with Attempt+1. Handlers are therefore written to be re-run from the start:
// a backup interrupted half-way simply runs again (the chunks it already
// stored are deduplicated). After Config.MaxAttempts interrupted runs the job
// is failed through its Handler's Fail, so nothing stays in a transient state
// forever.
//
// In a cluster (Config.Node set) a Runner claims only the jobs of its node
// and the jobs of no node: a job pinned to a node that is down waits for it,
// however long, and resumes (lease expired, Attempt+1) when the node is back.
//
// Why not River (riverqueue): its rescuer re-runs a job a fixed time after it
// started, not after its worker stopped answering. A backup of a large disk may
// run for hours, while a crash must be recovered within a minute; a lease with a
// heartbeat gives both. The queue is one table of the store, so creating a
// backup record and its job is a single transaction.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/csbs/csbs/internal/logging"
	"github.com/csbs/csbs/internal/store"
)

// Handler does one kind of job.
type Handler interface {
	// Run does the job. It may be called again for the same job after a
	// crash, so it must tolerate finding its own earlier partial work. A nil
	// error marks the job succeeded; an error marks it failed and Fail is
	// called with it. Run must return promptly when ctx is cancelled: the
	// job then stays running and is resumed after its lease expires (or by
	// the next process).
	Run(ctx context.Context, j *store.Job) error
	// Fail records a failure on the objects the job works on (a backup goes
	// to error with a reason). It is called when Run returned an error, and
	// when a job was interrupted more than MaxAttempts times.
	Fail(ctx context.Context, j *store.Job, reason error)
}

// Runner claims jobs and runs them.
type Runner struct {
	store    store.Store
	owner    string
	node     string
	workers  int
	lease    time.Duration
	attempts int
	poll     time.Duration
	log      *slog.Logger
	observe  Observer

	handlers map[string]Handler
	wake     chan struct{}
}

// Config configures a Runner.
type Config struct {
	// Owner names this process in leases; it must differ between processes
	// sharing a database. Required.
	Owner string
	// Node is the node this process belongs to: it runs only the jobs of
	// that node and the jobs of no node. "" runs every job (one node).
	Node string
	// Workers is how many jobs run at once. Default 2.
	Workers int
	// Lease is how long a claim lasts without a heartbeat. Default 30s.
	Lease time.Duration
	// MaxAttempts is how many claims a job gets before it is failed. Default 3.
	MaxAttempts int
	// Poll is how often an idle worker looks for work when nobody calls
	// Notify (jobs queued by another process). Default 1s.
	Poll time.Duration
	// Log receives one line per job start and end. Default slog.Default().
	Log *slog.Logger
	// Observer, when not nil, is told of every job run (for metrics).
	Observer Observer
}

// Observer is told when job runs start and end. Its methods are called on
// the worker's goroutine and must return quickly.
type Observer interface {
	// JobStarted is called when a run of a job of kind starts.
	JobStarted(kind string)
	// JobFinished is called when a job ended after d: succeeded when err
	// is nil, failed otherwise. A run cut short by shutdown or by a lost
	// lease is not finished (it resumes) and is not reported.
	JobFinished(kind string, d time.Duration, err error)
}

type noObserver struct{}

func (noObserver) JobStarted(string)                        {}
func (noObserver) JobFinished(string, time.Duration, error) {}

// New returns a Runner over the queue in s.
func New(s store.Store, c Config) *Runner {
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
	return &Runner{
		store: s, owner: c.Owner, node: c.Node, workers: c.Workers, lease: c.Lease, attempts: c.MaxAttempts,
		poll: c.Poll, log: c.Log, observe: c.Observer, handlers: map[string]Handler{}, wake: make(chan struct{}, 1),
	}
}

// Handle registers the handler of a job kind. Call it before Run.
func (r *Runner) Handle(kind string, h Handler) { r.handlers[kind] = h }

// Notify wakes an idle worker: call it after queueing a job.
func (r *Runner) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run works until ctx is cancelled, then waits for running handlers to
// return (they see ctx cancelled) and leaves their jobs to be resumed.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < r.workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx)
		}()
	}
	wg.Wait()
}

func (r *Runner) work(ctx context.Context) {
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for ctx.Err() == nil {
		j, err := r.store.ClaimJob(ctx, r.owner, r.node, r.lease)
		if err != nil && ctx.Err() == nil {
			r.log.Error("claim job", "err", err)
		}
		if j == nil {
			select {
			case <-ctx.Done():
			case <-r.wake:
			case <-t.C:
			}
			continue
		}
		r.run(ctx, j)
		// Another job may be waiting; let the next loop claim it at once.
	}
}

// ErrInterrupted is the reason given to Fail when a job was claimed more
// than MaxAttempts times: its runs kept being cut short by process restarts.
var ErrInterrupted = errors.New("interrupted by process restarts too many times")

func (r *Runner) run(ctx context.Context, j *store.Job) {
	log := r.log.With("job_id", j.ID, "kind", j.Kind, "attempt", j.Attempt)
	// The handler's own lines logged with ctx name the job too.
	ctx = logging.With(ctx, "job_id", j.ID)
	h, ok := r.handlers[j.Kind]
	if !ok {
		log.Error("no handler for job kind; failing it")
		r.finish(ctx, j, fmt.Sprintf("unknown job kind %q", j.Kind))
		return
	}
	if j.Attempt > r.attempts {
		err := fmt.Errorf("%w (%d attempts)", ErrInterrupted, j.Attempt-1)
		log.Warn("job failed", "err", err)
		h.Fail(ctx, j, err)
		r.finish(ctx, j, err.Error())
		r.observe.JobFinished(j.Kind, 0, err)
		return
	}

	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lost := make(chan struct{})
	go r.heartbeat(jctx, cancel, j, lost)

	log.Info("job started")
	r.observe.JobStarted(j.Kind)
	start := time.Now()
	err := h.Run(jctx, j)
	cancel()
	select {
	case <-lost:
		log.Warn("job lease lost; another worker owns it now")
		return
	default:
	}
	if ctx.Err() != nil {
		log.Info("job interrupted by shutdown; it resumes after restart")
		return
	}
	if err != nil {
		log.Warn("job failed", "err", err, "seconds", time.Since(start).Seconds())
		h.Fail(ctx, j, err)
		r.finish(ctx, j, err.Error())
		r.observe.JobFinished(j.Kind, time.Since(start), err)
		return
	}
	log.Info("job succeeded", "seconds", time.Since(start).Seconds())
	r.finish(ctx, j, "")
	r.observe.JobFinished(j.Kind, time.Since(start), nil)
}

func (r *Runner) heartbeat(ctx context.Context, cancel context.CancelFunc, j *store.Job, lost chan<- struct{}) {
	t := time.NewTicker(r.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := r.store.RenewLease(ctx, j.ID, r.owner, r.lease)
			if errors.Is(err, store.ErrLeaseLost) {
				close(lost)
				cancel()
				return
			}
			if err != nil && ctx.Err() == nil {
				r.log.Warn("renew job lease", "job_id", j.ID, "err", err)
			}
		}
	}
}

func (r *Runner) finish(ctx context.Context, j *store.Job, errMsg string) {
	// The job's result must be recorded even when shutdown began meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.store.FinishJob(ctx, j.ID, r.owner, errMsg); err != nil {
		r.log.Error("finish job", "job_id", j.ID, "err", err)
	}
}
