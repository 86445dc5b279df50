package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// TestSQLiteSettings checks the connection options the store's guarantees
// rest on: durability, foreign keys, and write transactions that hold the
// write lock from BEGIN.
func TestSQLiteSettings(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "csbs.db")
	st, err := Open(ctx, "sqlite:"+path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	db := st.(*sqlStore).db
	for _, tc := range []struct{ pragma, want string }{
		{"journal_mode", "wal"},
		{"synchronous", "2"}, // FULL
		{"foreign_keys", "1"},
		{"busy_timeout", "30000"},
	} {
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s = %s, want %s", tc.pragma, got, tc.want)
		}
	}

	// While a transaction that has only read is open, another connection
	// cannot take the write lock: the transaction began IMMEDIATE.
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	err = st.InTx(ctx, func(tx Tx) error {
		if _, err := tx.CountItems(ctx, "p", ItemFilter{}); err != nil {
			return err
		}
		if _, err := other.ExecContext(ctx, "BEGIN IMMEDIATE; ROLLBACK"); err == nil {
			t.Error("another connection took the write lock during a transaction")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx, "BEGIN IMMEDIATE; ROLLBACK"); err != nil {
		t.Errorf("write lock still held after the transaction: %v", err)
	}
}

func TestRebind(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"a = ? AND b IN (?, ?)", "a = $1 AND b IN ($2, $3)"},
		{`x LIKE ? ESCAPE '\' AND y = '?' AND z = ?`, `x LIKE $1 ESCAPE '\' AND y = '?' AND z = $2`},
	} {
		if got := (postgresDialect{}).rebind(tc.in); got != tc.want {
			t.Errorf("rebind(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	db := "sqlite:" + filepath.Join(t.TempDir(), "csbs.db")
	st, err := Open(ctx, db, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.(*sqlStore).db.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 0)`)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st, err := Open(ctx, db, ""); err == nil {
		st.Close()
		t.Error("Open of a database migrated by a newer csbs succeeded")
	}
}
