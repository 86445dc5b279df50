package store

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestPostgresFull: PostgreSQL's disk_full (53100) is ErrFull; other
// errors are not. (SQLite's SQLITE_FULL is tested for real by the e2e
// TestDatabaseFull on a small file system.)
func TestPostgresFull(t *testing.T) {
	s := &sqlStore{queries: queries{d: postgresDialect{}}}
	for _, tc := range []struct {
		err  error
		full bool
	}{
		{fmt.Errorf("insert: %w", &pgconn.PgError{Code: "53100", Message: "could not extend file: No space left on device"}), true},
		{&pgconn.PgError{Code: "23505"}, false},
		{errors.New("connection refused"), false},
	} {
		if got := errors.Is(s.fullErr(tc.err), ErrFull); got != tc.full {
			t.Errorf("%v: full %v, want %v", tc.err, got, tc.full)
		}
	}
}
