// Package faulty wraps a blob.Backend to inject faults in tests: an error
// on the Nth Save, Load or Remove of an object type, a delay, or a hook
// that runs before the operation (to block it, to observe it, or to kill
// the process at an exact point).
//
// Rules are matched in the order they were added; every matching rule's
// hook runs and the first error returned ends the call before the wrapped
// backend sees it. The wrapper hides the optional interfaces of the wrapped
// backend (blob.FileSaver...), so the repository uses plain Save for packs.
package faulty

import (
	"context"
	"io"
	"sync"

	"github.com/csbs/csbs/internal/repository/blob"
)

// Op is a kind of backend call.
type Op int

// The operations a Rule can match.
const (
	Save Op = iota
	Load
	Remove
	Stat
	List
)

func (o Op) String() string {
	return [...]string{"save", "load", "remove", "stat", "list"}[o]
}

// Rule injects a fault into calls of one operation on one object type.
type Rule struct {
	Op   Op
	Type blob.FileType
	// Nth selects the call, counted from 1 over the calls this rule
	// matches; 0 matches every call.
	Nth int
	// Hook runs for a selected call before the wrapped backend is called;
	// its error fails the call (the object is not saved, loaded or
	// removed).
	Hook func(ctx context.Context, h blob.Handle) error
	// After, when set, runs after the wrapped backend succeeded; its error
	// is returned although the operation took effect (a lost reply).
	After func(ctx context.Context, h blob.Handle) error

	seen int
}

// Backend is a blob.Backend with injected faults. It is safe for concurrent
// use.
type Backend struct {
	be    blob.Backend
	mu    sync.Mutex
	rules []*Rule
}

var _ blob.Backend = (*Backend)(nil)

// Wrap returns be with no faults.
func Wrap(be blob.Backend) *Backend { return &Backend{be: be} }

// Unwrap returns the wrapped backend.
func (b *Backend) Unwrap() blob.Backend { return b.be }

// Add installs a rule.
func (b *Backend) Add(r Rule) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rules = append(b.rules, &r)
}

// Fail makes the nth call of op on objects of type t fail with err (every
// call when n is 0).
func (b *Backend) Fail(op Op, t blob.FileType, n int, err error) {
	b.Add(Rule{Op: op, Type: t, Nth: n, Hook: func(context.Context, blob.Handle) error { return err }})
}

// Reset removes every rule.
func (b *Backend) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rules = nil
}

// selected returns the rules that fire for this call.
func (b *Backend) selected(op Op, t blob.FileType) []*Rule {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*Rule
	for _, r := range b.rules {
		if r.Op != op || r.Type != t {
			continue
		}
		r.seen++
		if r.Nth == 0 || r.seen == r.Nth {
			out = append(out, r)
		}
	}
	return out
}

func (b *Backend) do(ctx context.Context, op Op, h blob.Handle, call func() error) error {
	rules := b.selected(op, h.Type)
	for _, r := range rules {
		if r.Hook != nil {
			if err := r.Hook(ctx, h); err != nil {
				return err
			}
		}
	}
	if err := call(); err != nil {
		return err
	}
	for _, r := range rules {
		if r.After != nil {
			if err := r.After(ctx, h); err != nil {
				return err
			}
		}
	}
	return nil
}

// Location returns the wrapped backend's location.
func (b *Backend) Location() string { return b.be.Location() }

// Save saves through the wrapped backend unless a rule fails it.
func (b *Backend) Save(ctx context.Context, h blob.Handle, rd io.Reader) error {
	return b.do(ctx, Save, h, func() error { return b.be.Save(ctx, h, rd) })
}

// Load loads through the wrapped backend unless a rule fails it.
func (b *Backend) Load(ctx context.Context, h blob.Handle, length int, offset int64, fn func(io.Reader) error) error {
	return b.do(ctx, Load, h, func() error { return b.be.Load(ctx, h, length, offset, fn) })
}

// Stat stats through the wrapped backend unless a rule fails it.
func (b *Backend) Stat(ctx context.Context, h blob.Handle) (fi blob.FileInfo, err error) {
	err = b.do(ctx, Stat, h, func() error {
		fi, err = b.be.Stat(ctx, h)
		return err
	})
	return fi, err
}

// Remove removes through the wrapped backend unless a rule fails it.
func (b *Backend) Remove(ctx context.Context, h blob.Handle) error {
	return b.do(ctx, Remove, h, func() error { return b.be.Remove(ctx, h) })
}

// List lists through the wrapped backend unless a rule fails it (the hook
// gets a handle with an empty name).
func (b *Backend) List(ctx context.Context, t blob.FileType, fn func(blob.FileInfo) error) error {
	return b.do(ctx, List, blob.Handle{Type: t}, func() error { return b.be.List(ctx, t, fn) })
}

// Close closes the wrapped backend.
func (b *Backend) Close() error { return b.be.Close() }
