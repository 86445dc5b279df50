package repository

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/csbs/csbs/internal/repository/blob/local"
)

// TestInitBackend creates a repository through a backend and opens it again;
// a second InitBackend on the same backend must refuse with ErrExists.
func TestInitBackend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	be, err := local.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := InitBackend(ctx, be, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	id := r.ID()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	be2, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitBackend(ctx, be2, password, testOpts); !errors.Is(err, ErrExists) {
		t.Fatalf("InitBackend over a repository: %v, want ErrExists", err)
	}
	r2, err := OpenBackend(ctx, be2, password, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if r2.ID() != id {
		t.Fatalf("reopened id %s, want %s", r2.ID(), id)
	}
}
