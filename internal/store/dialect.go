package store

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// A dialect is what differs between the databases. Queries are written once
// with ? placeholders; everything else they share.
type dialect interface {
	// name names the dialect and its migrations directory.
	name() string
	// rebind rewrites the ? placeholders of q for the driver.
	rebind(q string) string
	// skipLocked is appended to a SELECT whose rows the statement will
	// update, so that concurrent claimers pass over each other's rows.
	skipLocked() string
	// noLimit is the LIMIT value meaning "all rows" (SQLite needs a LIMIT
	// before an OFFSET).
	noLimit() string
	// lockMigrations serializes migrations of several processes starting
	// at once; it holds until tx ends.
	lockMigrations(ctx context.Context, tx *sql.Tx) error
	// constraint reports which constraint err violated, if any.
	constraint(err error) violation
	// full reports whether err says the database's disk is full.
	full(err error) bool
}

type violation int

const (
	noViolation violation = iota
	uniqueViolation
	foreignKeyViolation
)

// sqliteDialect relies on the connection options of sqliteDSN: every
// transaction begins IMMEDIATE, so it holds the one write lock from its
// start, and writers queue on busy_timeout instead of failing.
type sqliteDialect struct{}

func (sqliteDialect) name() string           { return "sqlite" }
func (sqliteDialect) rebind(q string) string { return q }
func (sqliteDialect) skipLocked() string     { return "" }
func (sqliteDialect) noLimit() string        { return "-1" }

func (sqliteDialect) lockMigrations(context.Context, *sql.Tx) error {
	return nil // BEGIN IMMEDIATE already excludes other writers
}

func (sqliteDialect) constraint(err error) violation {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return noViolation
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return uniqueViolation
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return foreignKeyViolation
	}
	return noViolation
}

func (sqliteDialect) full(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_FULL
}

// sqliteDSN opens path with the options the store depends on: WAL so that
// readers do not block the writer, synchronous=FULL so that a commit (a
// backup reported available) survives a power loss, foreign keys, and
// IMMEDIATE transactions so that a transaction never fails upgrading its
// read lock to a write lock.
func sqliteDSN(path string) string {
	// A SQLite URI filename treats these specially.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	return "file:" + esc.Replace(path) +
		"?_pragma=busy_timeout(30000)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(FULL)" +
		"&_pragma=foreign_keys(1)" +
		"&_txlock=immediate"
}

// postgresDialect uses row locks with SKIP LOCKED for the job queue and a
// transaction-scoped advisory lock for migrations.
type postgresDialect struct{}

// migrationLockKey is the advisory lock key of csbs migrations (an arbitrary
// constant: "csbs" in ASCII).
const migrationLockKey = 0x63736273

func (postgresDialect) name() string       { return "postgres" }
func (postgresDialect) skipLocked() string { return " FOR UPDATE SKIP LOCKED" }
func (postgresDialect) noLimit() string    { return "ALL" }

func (postgresDialect) rebind(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	quoted := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			quoted = !quoted
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func (postgresDialect) lockMigrations(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey)
	return err
}

func (postgresDialect) full(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "53100" // disk_full
}

func (postgresDialect) constraint(err error) violation {
	var e *pgconn.PgError
	if !errors.As(err, &e) {
		return noViolation
	}
	switch e.Code {
	case "23505":
		return uniqueViolation
	case "23503":
		return foreignKeyViolation
	}
	return noViolation
}
