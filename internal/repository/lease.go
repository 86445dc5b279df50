package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
)

// ErrBusy is returned by GC while another process's GC runs on the
// repository. Call GC again later.
var ErrBusy = errors.New("another garbage collection is running on the repository; try again later")

// Lease kinds.
const (
	leaseBackup  = "backup"
	leaseRestore = "restore"
	leaseVerify  = "verify"
	leasePack    = "pack" // a pack being saved and indexed
	leaseGC      = "gc"
)

// leaseRecord is the content of leases/<id>: plaintext JSON, at most
// maxLeaseSize bytes. Start is the ModTime of the lease's first save (zero
// in that first save: its ModTime is then the start).
type leaseRecord struct {
	Kind  string        `json:"kind"`
	Host  string        `json:"host,omitempty"`
	PID   int           `json:"pid,omitempty"`
	Start time.Time     `json:"start,omitzero"`
	TTL   time.Duration `json:"ttl_ns,omitempty"` // the holder's LeaseTTL: it counts as live that long after a save
}

const maxLeaseSize = 4 << 10

func decodeLease(b []byte) (leaseRecord, error) {
	var l leaseRecord
	if len(b) > maxLeaseSize {
		return l, fmt.Errorf("lease of %d bytes is too large", len(b))
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("lease: %w", err)
	}
	if l.Kind == "" || len(l.Kind) > 16 || len(l.Host) > 256 || l.TTL < 0 || l.TTL > 24*time.Hour {
		return l, errors.New("lease: bad kind, host or TTL")
	}
	return l, nil
}

// lease is one operation's registration in the repository: saved when the
// operation starts and re-saved (heartbeat) every LeaseTTL/4 until it ends.
type lease struct {
	r     *Repository
	name  string
	rec   leaseRecord
	start time.Time // storage time of the first save

	mu       sync.Mutex
	lastOK   time.Time // local (monotonic) time the last successful save started
	broken   error     // set when a gap between saves may have let the lease go stale
	released bool
}

var hostname, _ = os.Hostname()

// acquireLease registers an operation of kind.
func (r *Repository) acquireLease(ctx context.Context, kind string) (*lease, error) {
	l := &lease{r: r, name: newID(), rec: leaseRecord{Kind: kind, Host: hostname, PID: os.Getpid(), TTL: r.opts.LeaseTTL}}
	began := time.Now()
	if err := l.save(ctx); err != nil {
		return nil, fmt.Errorf("register %s lease: %w", kind, err)
	}
	fi, err := r.be.Stat(ctx, l.handle())
	if err != nil {
		_ = r.be.Remove(context.WithoutCancel(ctx), l.handle())
		return nil, fmt.Errorf("register %s lease: %w", kind, err)
	}
	l.start, l.rec.Start = fi.ModTime, fi.ModTime
	l.lastOK = began
	r.leases.add(l)
	return l, nil
}

func (l *lease) handle() blob.Handle { return blob.Handle{Type: blob.LeaseFile, Name: l.name} }

func (l *lease) save(ctx context.Context) error {
	b, err := json.Marshal(l.rec)
	if err != nil {
		return err
	}
	return l.r.be.Save(ctx, l.handle(), bytes.NewReader(b))
}

// heartbeat re-saves the lease. A lease whose saves were more than
// LeaseTTL apart (measured from the start of one to the end of the next)
// may have looked stale to a GC elsewhere, which then no longer protected
// what the operation uses: it is broken for good.
func (l *lease) heartbeat(ctx context.Context) error {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return nil
	}
	prev := l.lastOK
	l.mu.Unlock()
	began := time.Now()
	err := l.save(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken == nil && time.Since(prev) >= l.r.leaseLimit() {
		l.broken = fmt.Errorf("lease %s: no heartbeat reached the repository for %v (more than the lease TTL %v); a garbage collection may have deleted data this operation uses",
			l.name, time.Since(prev).Round(time.Millisecond), l.r.opts.LeaseTTL)
	}
	if err != nil {
		return err
	}
	l.lastOK = began
	return l.broken
}

// valid returns why the lease no longer protects its operation, or nil. It
// checks without saving: the last successful save must be recent enough that
// storage still shows the lease live for a while.
func (l *lease) valid() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return l.broken
	}
	if time.Since(l.lastOK) >= l.r.leaseLimit() {
		return fmt.Errorf("lease %s: last heartbeat %v ago, more than the lease TTL %v", l.name, time.Since(l.lastOK).Round(time.Millisecond), l.r.opts.LeaseTTL)
	}
	return nil
}

// leaseLimit is how long after a save began its holder trusts the lease:
// LeaseTTL less a slack for the storage's time granularity (storage may
// record a save up to that much early; GCMargin exceeds it), at most a
// quarter of the TTL.
func (r *Repository) leaseLimit() time.Duration {
	return r.opts.LeaseTTL - min(r.opts.GCMargin, r.opts.LeaseTTL/4)
}

// release removes the lease; it is safe to call more than once.
func (l *lease) release() {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return
	}
	l.released = true
	l.mu.Unlock()
	l.r.leases.remove(l)
	// A lease left behind (storage unreachable) goes stale after its TTL.
	_ = l.r.be.Remove(context.Background(), l.handle())
}

// leaseSet is the leases of one Repository and the goroutine that
// heartbeats them.
type leaseSet struct {
	mu     sync.Mutex
	leases map[*lease]struct{}
	stop   chan struct{}
	done   chan struct{}
}

func (s *leaseSet) add(l *lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leases == nil {
		s.leases = make(map[*lease]struct{})
	}
	s.leases[l] = struct{}{}
	if s.stop == nil {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.loop(l.r.opts.LeaseTTL/4, s.stop, s.done)
	}
}

func (s *leaseSet) remove(l *lease) {
	s.mu.Lock()
	delete(s.leases, l)
	s.mu.Unlock()
}

func (s *leaseSet) loop(every time.Duration, stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		ls := make([]*lease, 0, len(s.leases))
		for l := range s.leases {
			ls = append(ls, l)
		}
		s.mu.Unlock()
		for _, l := range ls {
			ctx, cancel := context.WithTimeout(context.Background(), every)
			_ = l.heartbeat(ctx) // a failure shows in valid()
			cancel()
		}
	}
}

// close stops the heartbeats.
func (s *leaseSet) close() {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// liveLease is a lease another (or this) process holds, as GC sees it.
type liveLease struct {
	name  string
	rec   leaseRecord
	start time.Time
	seen  time.Time // ModTime of the last save
}

// yields reports whether the GC (or repair) holding lease gl must leave
// the repository to other, a live lease of another GC: unless other began
// strictly later. Leases that began in the same tick of storage's clock
// (a millisecond on a local file system, a second on S3) cannot be
// ordered: the other GC may have listed the leases before gl was saved,
// found none and gone on, so gl's GC gives way, and when both see each
// other both give way (ErrBusy: try again later), never both run.
func yields(gl *lease, other liveLease) bool {
	return other.rec.Kind == leaseGC && other.name != gl.name && !other.start.After(gl.start)
}

// barrier returns the time before which a mark (a tombstone) is invisible
// to every operation the live leases hold: the start of the earliest one
// but gl's and other GCs', gl.start if none, less GCMargin. It returns
// ErrBusy when gl's holder must give way to another GC (yields).
func (r *Repository) barrier(gl *lease, live []liveLease) (time.Time, error) {
	b := gl.start
	for _, l := range live {
		if yields(gl, l) {
			return time.Time{}, ErrBusy
		}
		if l.name == gl.name || l.rec.Kind == leaseGC {
			continue
		}
		if l.start.Before(b) {
			b = l.start
		}
	}
	return b.Add(-r.opts.GCMargin), nil
}

// readLeases lists the leases and sorts them into live ones (saved within
// their holder's TTL before now, by storage time) and the names of those
// stale for long (left by killed processes; GC removes them). Unreadable
// leases count with this process's TTL, so a damaged lease never lets GC
// delete too early.
func (r *Repository) readLeases(ctx context.Context, now time.Time) (live []liveLease, dead []string, err error) {
	var infos []blob.FileInfo
	err = r.be.List(ctx, blob.LeaseFile, func(fi blob.FileInfo) error {
		infos = append(infos, fi)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list leases: %w", err)
	}
	for _, fi := range infos {
		if now.Sub(fi.ModTime) > 4*max(r.opts.LeaseTTL, 24*time.Hour) {
			dead = append(dead, fi.Name) // older than any TTL a lease may carry
			continue
		}
		ll := liveLease{name: fi.Name, seen: fi.ModTime, start: fi.ModTime}
		ttl := r.opts.LeaseTTL
		b, err := readAll(ctx, r.be, blob.Handle{Type: blob.LeaseFile, Name: fi.Name}, maxLeaseSize)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil && !isDamage(err) {
			return nil, nil, fmt.Errorf("read lease %s: %w", fi.Name, err)
		}
		if err == nil {
			if rec, derr := decodeLease(b); derr == nil {
				ll.rec = rec
				if !rec.Start.IsZero() && rec.Start.Before(ll.start) {
					ll.start = rec.Start
				}
				if rec.TTL > 0 {
					ttl = rec.TTL
				}
			}
		}
		if age := now.Sub(fi.ModTime); age > ttl {
			if age > 4*ttl {
				dead = append(dead, fi.Name)
			}
			continue
		}
		live = append(live, ll)
	}
	sort.Slice(live, func(i, j int) bool {
		if !live[i].start.Equal(live[j].start) {
			return live[i].start.Before(live[j].start)
		}
		return live[i].name < live[j].name
	})
	return live, dead, nil
}

// storageNow returns the storage's present time: the ModTime of a probe
// object saved now.
func (r *Repository) storageNow(ctx context.Context) (time.Time, error) {
	h := blob.Handle{Type: blob.LeaseFile, Name: newID()}
	if err := r.be.Save(ctx, h, bytes.NewReader([]byte(`{"kind":"probe"}`))); err != nil {
		return time.Time{}, fmt.Errorf("probe storage time: %w", err)
	}
	fi, err := r.be.Stat(ctx, h)
	_ = r.be.Remove(context.WithoutCancel(ctx), h)
	if err != nil {
		return time.Time{}, fmt.Errorf("probe storage time: %w", err)
	}
	return fi.ModTime, nil
}
