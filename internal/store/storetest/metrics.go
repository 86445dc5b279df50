package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/store"
)

// testOldestJob checks the age of the queue's head that /metrics reports.
func testOldestJob(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	if at, err := s.OldestJob(ctx, store.JobQueued); err != nil || !at.IsZero() {
		t.Fatalf("OldestJob of an empty queue = %v, %v; want the zero time", at, err)
	}
	for i, d := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second} {
		j := &store.Job{Kind: "gc", ProjectID: project, CreatedAt: base.Add(d)}
		if i == 1 {
			j.Status = store.JobRunning
		}
		if err := s.InsertJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		status string
		want   time.Time
	}{
		{store.JobQueued, base.Add(2 * time.Second)},
		{store.JobRunning, base.Add(time.Second)},
		{store.JobFailed, time.Time{}},
	} {
		at, err := s.OldestJob(ctx, tc.status)
		if err != nil || !at.Equal(tc.want) {
			t.Errorf("OldestJob(%q) = %v, %v; want %v", tc.status, at, err, tc.want)
		}
	}
}
