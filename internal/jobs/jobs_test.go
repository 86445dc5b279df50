package jobs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/store"
)

// handler is a Handler whose Run is a function; it records Fail calls.
type handler struct {
	run   func(ctx context.Context, j *store.Job) error
	mu    sync.Mutex
	fails []error
}

func (h *handler) Run(ctx context.Context, j *store.Job) error { return h.run(ctx, j) }

func (h *handler) Fail(_ context.Context, _ *store.Job, reason error) {
	h.mu.Lock()
	h.fails = append(h.fails, reason)
	h.mu.Unlock()
}

func (h *handler) failures() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.fails...)
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func queue(t *testing.T, s store.Store, kind string) string {
	t.Helper()
	j := &store.Job{Kind: kind, ProjectID: "p", Status: store.JobQueued}
	if err := s.InsertJob(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	return j.ID
}

func waitJob(t *testing.T, s store.Store, id string, want string) *store.Job {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		j, err := s.GetJob(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status == want {
			return j
		}
		time.Sleep(10 * time.Millisecond)
	}
	j, _ := s.GetJob(context.Background(), id)
	t.Fatalf("job %s is %s, want %s", id, j.Status, want)
	return nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRunnerOutcomes(t *testing.T) {
	boom := errors.New("disk vda cannot be read")
	cases := []struct {
		name       string
		run        func(ctx context.Context, j *store.Job) error
		wantStatus string
		wantFail   error
	}{
		{"success", func(context.Context, *store.Job) error { return nil }, store.JobSucceeded, nil},
		{"failure is recorded", func(context.Context, *store.Job) error { return boom }, store.JobFailed, boom},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			h := &handler{run: tc.run}
			r := New(s, Config{Owner: "w1", Poll: 10 * time.Millisecond, Log: quiet()})
			r.Handle("k", h)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { r.Run(ctx); close(done) }()
			id := queue(t, s, "k")
			r.Notify()
			j := waitJob(t, s, id, tc.wantStatus)
			cancel()
			<-done
			fails := h.failures()
			if tc.wantFail == nil && len(fails) != 0 {
				t.Fatalf("Fail called: %v", fails)
			}
			if tc.wantFail != nil {
				if len(fails) != 1 || !errors.Is(fails[0], tc.wantFail) || j.Error != tc.wantFail.Error() {
					t.Fatalf("fails %v, job error %q; want %v once", fails, j.Error, tc.wantFail)
				}
			}
		})
	}
}

// TestUnknownKindFails: a job nobody handles is failed, not left queued.
func TestUnknownKindFails(t *testing.T) {
	s := openStore(t)
	r := New(s, Config{Owner: "w1", Poll: 10 * time.Millisecond, Log: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	id := queue(t, s, "nobody")
	if j := waitJob(t, s, id, store.JobFailed); j.Error == "" {
		t.Fatal("no reason recorded")
	}
}

// TestInterruptedJobResumes stops a runner while its job runs (as a crash
// would: the job stays running) and checks that a second runner takes it
// over once the lease expires, with the next attempt number.
func TestInterruptedJobResumes(t *testing.T) {
	s := openStore(t)
	started := make(chan struct{}, 1)
	first := &handler{run: func(ctx context.Context, j *store.Job) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}}
	r1 := New(s, Config{Owner: "dead", Lease: time.Second, Poll: 10 * time.Millisecond, Log: quiet()})
	r1.Handle("k", first)
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan struct{})
	go func() { r1.Run(ctx1); close(done1) }()
	id := queue(t, s, "k")
	r1.Notify()
	<-started
	stop1()
	<-done1
	if j, _ := s.GetJob(context.Background(), id); j.Status != store.JobRunning {
		t.Fatalf("after shutdown the job is %s, want running (resumable)", j.Status)
	}
	if len(first.failures()) != 0 {
		t.Fatal("a job cut short by shutdown must not be failed")
	}

	var attempt int
	second := &handler{run: func(_ context.Context, j *store.Job) error { attempt = j.Attempt; return nil }}
	r2 := New(s, Config{Owner: "alive", Lease: time.Second, Poll: 50 * time.Millisecond, Log: quiet()})
	r2.Handle("k", second)
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	go r2.Run(ctx2)
	waitJob(t, s, id, store.JobSucceeded)
	if attempt != 2 {
		t.Fatalf("resumed as attempt %d, want 2", attempt)
	}
}

// TestTooManyInterruptions: a job claimed more than MaxAttempts times is
// failed with ErrInterrupted instead of running again.
func TestTooManyInterruptions(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	id := queue(t, s, "k")
	// Two crashed claims: leases of 1ms that nobody renews.
	for i := 0; i < 2; i++ {
		j, err := s.ClaimJob(ctx, "crashed", "", time.Millisecond)
		if err != nil || j == nil || j.ID != id {
			t.Fatalf("claim %d: %v %v", i, j, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ran := false
	h := &handler{run: func(context.Context, *store.Job) error { ran = true; return nil }}
	r := New(s, Config{Owner: "w", MaxAttempts: 2, Poll: 10 * time.Millisecond, Log: quiet()})
	r.Handle("k", h)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.Run(rctx)
	j := waitJob(t, s, id, store.JobFailed)
	if ran {
		t.Fatal("the job ran a third time")
	}
	if f := h.failures(); len(f) != 1 || !errors.Is(f[0], ErrInterrupted) {
		t.Fatalf("Fail got %v, want ErrInterrupted", f)
	}
	if j.Error == "" {
		t.Fatal("no reason recorded on the job")
	}
}
