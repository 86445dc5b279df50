package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"
)

// progress shows how a job advances: a redrawn bar with percent, MB/s and
// ETA on a terminal; otherwise a plain line whenever the percent changes
// (logs and CI stay readable). It writes to stderr, so that stdout holds
// only the result.
//
// A progress-bar library (schollz/progressbar, vbauerster/mpb) was not
// taken: the bar is one line redrawn every poll, and golang.org/x/term,
// the only thing needed to tell a terminal, is maintained with Go itself.
type progress struct {
	w     io.Writer
	tty   bool
	what  string // "backup 1234…"
	start time.Time

	lastPct    int
	lastStatus string
	lastBytes  int64
	lastAt     time.Time
	rate       float64 // bytes/s, smoothed
	drawn      bool
}

func newProgress(what string) *progress {
	return &progress{w: os.Stderr, tty: term.IsTerminal(int(os.Stderr.Fd())), what: what,
		start: time.Now(), lastPct: -1}
}

// update shows status at pct percent after done bytes (done < 0: unknown).
func (p *progress) update(status string, pct int, done int64) {
	now := time.Now()
	if done >= 0 && !p.lastAt.IsZero() && done >= p.lastBytes {
		if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
			r := float64(done-p.lastBytes) / dt
			if p.rate == 0 {
				p.rate = r
			} else {
				p.rate = 0.7*p.rate + 0.3*r
			}
		}
	}
	if done >= 0 {
		p.lastBytes, p.lastAt = done, now
	}
	speed := ""
	if p.rate > 0 {
		speed = fmt.Sprintf("%.1f MB/s", p.rate/1e6)
	}
	eta := ""
	if pct > 0 && pct < 100 {
		el := now.Sub(p.start)
		eta = "ETA " + fmtDuration(time.Duration(float64(el)*float64(100-pct)/float64(pct)))
	}
	if p.tty {
		const width = 30
		fill := width * max(min(pct, 100), 0) / 100
		bar := strings.Repeat("█", fill) + strings.Repeat("░", width-fill)
		fmt.Fprintf(p.w, "\r\033[K%s %s %3d%% %s %s %s", p.what, bar, pct, speed, eta, status)
		p.drawn = true
		return
	}
	if pct == p.lastPct && status == p.lastStatus {
		return
	}
	p.lastPct, p.lastStatus = pct, status
	fmt.Fprintln(p.w, strings.Join(slices.DeleteFunc([]string{p.what + ":", status, fmt.Sprintf("%d%%", pct), speed, eta},
		func(s string) bool { return s == "" }), " "))
}

// done ends the display with the final status.
func (p *progress) done(status string) {
	el := fmtDuration(time.Since(p.start))
	if p.tty && p.drawn {
		fmt.Fprintf(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "%s: %s after %s\n", p.what, status, el)
}

func fmtDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d < time.Hour {
		return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}

func httpClient(timeout time.Duration) *http.Client { return &http.Client{Timeout: timeout} }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
