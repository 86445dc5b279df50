package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers driver "pgx"
	_ "modernc.org/sqlite"             // registers driver "sqlite"
)

//go:embed migrations
var migrations embed.FS

// Open opens the database named by database and migrates its schema:
//
//	""                               the SQLite file dataDir/csbs.db
//	"sqlite:PATH"                    the SQLite file PATH
//	"postgres://…", "postgresql://…" a PostgreSQL database (a libpq URL)
//
// Directories of a SQLite file are created. Several processes may open and
// migrate the same database at once.
func Open(ctx context.Context, database, dataDir string) (Store, error) {
	var (
		driver, dsn string
		d           dialect
	)
	switch {
	case database == "":
		if dataDir == "" {
			return nil, errors.New("store: no data directory for the SQLite database: set data_dir or database")
		}
		p := filepath.Join(dataDir, "csbs.db")
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("store: create data directory: %w", err)
		}
		driver, dsn, d = "sqlite", sqliteDSN(p), sqliteDialect{}
	case strings.HasPrefix(database, "sqlite:"):
		p := strings.TrimPrefix(database, "sqlite:")
		if p == "" {
			return nil, errors.New(`store: database "sqlite:" names no file: use sqlite:PATH`)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, fmt.Errorf("store: create database directory: %w", err)
		}
		driver, dsn, d = "sqlite", sqliteDSN(p), sqliteDialect{}
	case strings.HasPrefix(database, "postgres://"), strings.HasPrefix(database, "postgresql://"):
		driver, dsn, d = "pgx", database, postgresDialect{}
	default:
		// The scheme only: the rest may hold a password.
		scheme, _, _ := strings.Cut(database, ":")
		return nil, fmt.Errorf(`store: unsupported database %q: use "" (SQLite in the data directory), "sqlite:PATH" or a "postgres://" URL`, scheme+":…")
	}

	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s database: %w", d.name(), err)
	}
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetMaxIdleConns(8) // the default 2 would reconnect (and rerun the SQLite pragmas) under load
	if driver == "pgx" {
		// Several nodes share the server's max_connections (100 by default).
		db.SetMaxOpenConns(16)
	}
	if err := ping(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to %s database: %w", d.name(), err)
	}
	if err := migrate(ctx, db, d); err != nil {
		db.Close()
		return nil, err
	}
	return &sqlStore{queries: queries{q: db, d: d, gen: new(atomic.Uint64)}, db: db}, nil
}

// A migration is one numbered SQL file of migrations/<dialect>/.
type migration struct {
	version int64
	name    string
	sql     string
}

func loadMigrations(d dialect) ([]migration, error) {
	dir := path.Join("migrations", d.name())
	ents, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, _ := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("store: migration %s: name must start with its version number", e.Name())
		}
		b, err := fs.ReadFile(migrations, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate applies the migrations the database lacks, each in its own
// transaction together with its schema_migrations row, so a crash leaves
// the schema at a version boundary.
func migrate(ctx context.Context, db *sql.DB, d dialect) error {
	ms, err := loadMigrations(d)
	if err != nil {
		return fmt.Errorf("store: load migrations: %w", err)
	}
	for _, m := range ms {
		if err := applyMigration(ctx, db, d, m, ms[len(ms)-1].version); err != nil {
			return fmt.Errorf("store: migration %s: %w", m.name, err)
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, d dialect, m migration, latest int64) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := d.lockMigrations(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    BIGINT NOT NULL PRIMARY KEY,
		name       TEXT   NOT NULL,
		applied_at BIGINT NOT NULL
	)`); err != nil {
		return err
	}
	var newest sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&newest); err != nil {
		return err
	}
	if newest.Valid && newest.Int64 > latest {
		return fmt.Errorf("the database schema is at version %d, newer than this csbs knows (%d): run a newer csbs", newest.Int64, latest)
	}
	var n int
	if err := tx.QueryRowContext(ctx, d.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), m.version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, d.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
		m.version, m.name, toMicros(time.Now())); err != nil {
		return err
	}
	return tx.Commit()
}

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// queries implements Tx on a database or a transaction.
type queries struct {
	q   querier
	d   dialect
	gen *atomic.Uint64 // the store's write generation
}

func (s *queries) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	res, err := s.q.ExecContext(ctx, s.d.rebind(query), args...)
	if err == nil {
		s.gen.Add(1)
	}
	return res, err
}

func (s *queries) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return s.q.QueryContext(ctx, s.d.rebind(query), args...)
}

func (s *queries) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return s.q.QueryRowContext(ctx, s.d.rebind(query), args...)
}

// sqlStore is a Store on database/sql.
type sqlStore struct {
	queries
	db *sql.DB
}

// InTx runs fn in a transaction. On SQLite the transaction takes the write
// lock when it begins (BEGIN IMMEDIATE), so transactions run one at a time
// and never fail with a lock upgrade; fn must use only tx, since the Store
// itself would wait for the lock fn holds.
func (s *sqlStore) InTx(ctx context.Context, fn func(tx Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.fullErr(fmt.Errorf("store: begin transaction: %w", err))
	}
	defer tx.Rollback() // after Commit a no-op; also when fn panics
	if err := fn(&queries{q: tx, d: s.d, gen: s.gen}); err != nil {
		return s.fullErr(err)
	}
	if err := tx.Commit(); err != nil {
		return s.fullErr(fmt.Errorf("store: commit: %w", err))
	}
	// Again after the commit: a reader that cached what it read during the
	// transaction must not take it for current.
	s.gen.Add(1)
	return nil
}

// fullErr marks err with ErrFull when it says the database's disk is full
// (the transaction was rolled back: nothing of it was written).
func (s *sqlStore) fullErr(err error) error {
	if s.d.full(err) {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}

// Generation implements Store.
func (s *sqlStore) Generation() uint64 { return s.gen.Load() }

func (s *sqlStore) Close() error { return s.db.Close() }

// toMicros is how times are stored: unix microseconds.
func toMicros(t time.Time) int64 { return t.UnixMicro() }

// fromMicros is the UTC time of stored microseconds.
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// now is the current time at the precision the database keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// ping connects, retrying for a few seconds while SQLite answers busy:
// switching a new database file to WAL takes an exclusive lock without
// calling the busy handler, so processes opening one file at the same
// moment can see SQLITE_BUSY once.
func ping(ctx context.Context, db *sql.DB) error {
	var err error
	for range 100 {
		if err = db.PingContext(ctx); err == nil || !strings.Contains(err.Error(), "SQLITE_BUSY") {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return err
}
