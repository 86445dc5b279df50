package auth

import (
	"sync"
	"time"
)

// Throttling of password guessing, per user name as the request gives it
// (so unknown names are slowed down alike and reveal nothing):
// after n consecutive failures, each attempt starts at least
// delay(n) after the previous one. Concurrent attempts queue behind each
// other, so parallel guessing gains nothing. An attempt that would have to
// wait longer than maxWait is refused at once, without checking the
// password. A success, or quiet for forgetAfter, resets the count.
const (
	baseDelay   = 200 * time.Millisecond
	maxDelay    = 5 * time.Second
	maxWait     = 30 * time.Second
	forgetAfter = 15 * time.Minute
	maxTracked  = 10000
)

type throttle struct {
	mu      sync.Mutex
	entries map[string]*attempts
}

type attempts struct {
	fails int
	next  time.Time // the earliest start of the next attempt
	last  time.Time // the last failure
}

func newThrottle() *throttle { return &throttle{entries: map[string]*attempts{}} }

// delay is the spacing of attempts after fails consecutive failures.
func delay(fails int) time.Duration {
	if fails <= 0 {
		return 0
	}
	d := baseDelay
	for i := 1; i < fails && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

// reserve books an attempt for key at or after now and returns how long
// to wait before making it; ok is false when the wait would exceed maxWait.
func (t *throttle) reserve(key string, now time.Time) (wait time.Duration, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.entries[key]
	if a == nil || a.fails == 0 {
		return 0, true
	}
	if now.Sub(a.last) > forgetAfter {
		delete(t.entries, key)
		return 0, true
	}
	start := now
	if a.next.After(now) {
		start = a.next
	}
	wait = start.Sub(now)
	if wait > maxWait {
		return 0, false
	}
	a.next = start.Add(delay(a.fails + 1)) // as if this attempt fails too: queued guesses spread out
	return wait, true
}

// fail counts a failed attempt of key.
func (t *throttle) fail(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.entries[key]
	if a == nil {
		if len(t.entries) >= maxTracked {
			t.forget(now)
		}
		if len(t.entries) >= maxTracked {
			key = "" // full of recent failures: all newcomers share one entry
			a = t.entries[key]
		}
	}
	if a == nil {
		a = &attempts{}
		t.entries[key] = a
	}
	if now.Sub(a.last) > forgetAfter {
		a.fails = 0
	}
	a.fails++
	a.last = now
	if next := now.Add(delay(a.fails)); next.After(a.next) {
		a.next = next
	}
}

// succeed resets key.
func (t *throttle) succeed(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.entries, key)
}

// forget drops entries quiet for forgetAfter; t.mu is held.
func (t *throttle) forget(now time.Time) {
	for k, a := range t.entries {
		if now.Sub(a.last) > forgetAfter {
			delete(t.entries, k)
		}
	}
}
