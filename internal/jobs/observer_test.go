package jobs

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/logging"
	"github.com/csbs/csbs/internal/store"
)

// events records what an Observer is told.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) JobStarted(kind string) { e.add("start " + kind) }

func (e *events) JobFinished(kind string, _ time.Duration, err error) {
	if err != nil {
		e.add("fail " + kind)
		return
	}
	e.add("ok " + kind)
}

func (e *events) add(s string) { e.mu.Lock(); e.got = append(e.got, s); e.mu.Unlock() }

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.got...)
}

// TestObserverAndJobID: the observer sees each run start and end, and the
// handler's own log lines (logged with its ctx) carry the job's id.
func TestObserverAndJobID(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"succeeded", nil, []string{"start k", "ok k"}},
		{"failed", errors.New("disk unreadable"), []string{"start k", "fail k"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			var buf syncBuffer
			log := logging.New(&buf, "json", "info")
			ev := &events{}
			h := &handler{run: func(ctx context.Context, j *store.Job) error {
				log.InfoContext(ctx, "handler line")
				return tc.err
			}}
			r := New(s, Config{Owner: "w1", Poll: 10 * time.Millisecond, Log: quiet(), Observer: ev})
			r.Handle("k", h)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { r.Run(ctx); close(done) }()
			id := queue(t, s, "k")
			r.Notify()
			want := store.JobSucceeded
			if tc.err != nil {
				want = store.JobFailed
			}
			waitJob(t, s, id, want)
			cancel()
			<-done
			if got := ev.list(); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("observer got %v, want %v", got, tc.want)
			}
			if !strings.Contains(buf.String(), `"job_id":"`+id+`"`) {
				t.Errorf("handler's log line lacks job_id %s: %s", id, buf.String())
			}
		})
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }
