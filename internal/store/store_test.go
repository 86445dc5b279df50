package store_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/store"
	"github.com/csbs/csbs/internal/store/storetest"
)

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) string {
		return "sqlite:" + filepath.Join(t.TempDir(), "csbs.db")
	})
}

// TestPostgres runs the suite on the PostgreSQL of CSBS_TEST_POSTGRES, each
// test in a schema of its own. It fails when the database is unreachable,
// unless CSBS_SKIP_POSTGRES=1.
func TestPostgres(t *testing.T) {
	if os.Getenv("CSBS_SKIP_POSTGRES") == "1" {
		t.Skip("CSBS_SKIP_POSTGRES=1")
	}
	base := os.Getenv("CSBS_TEST_POSTGRES")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal("CSBS_TEST_POSTGRES is not a URL")
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	if err := admin.PingContext(context.Background()); err != nil {
		t.Fatalf("PostgreSQL at %s is unreachable (set CSBS_TEST_POSTGRES, or CSBS_SKIP_POSTGRES=1 to skip): %v", u.Redacted(), err)
	}
	storetest.Run(t, func(t *testing.T) string {
		b := make([]byte, 8)
		rand.Read(b)
		schema := "csbs_test_" + hex.EncodeToString(b)
		if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := admin.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
				t.Errorf("drop schema %s: %v", schema, err)
			}
		})
		su := *u
		q := su.Query()
		q.Set("search_path", schema)
		su.RawQuery = q.Encode()
		return su.String()
	})
}

func TestOpenPaths(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Chdir(dir)
	for _, tc := range []struct{ database, dataDir, file string }{
		{"", filepath.Join(dir, "data"), filepath.Join(dir, "data", "csbs.db")},
		{"", "rel-data", filepath.Join(dir, "rel-data", "csbs.db")},
		{"sqlite:" + filepath.Join(dir, "sub", "we?ird #name%20.db"), "", filepath.Join(dir, "sub", "we?ird #name%20.db")},
		{"sqlite:rel.db", "", filepath.Join(dir, "rel.db")},
	} {
		s, err := store.Open(ctx, tc.database, tc.dataDir)
		if err != nil {
			t.Errorf("Open(%q, %q): %v", tc.database, tc.dataDir, err)
			continue
		}
		s.Close()
		if _, err := os.Stat(tc.file); err != nil {
			t.Errorf("Open(%q, %q) made no database file %s: %v", tc.database, tc.dataDir, tc.file, err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, db := range []string{"mysql://u:secret@h/db", "sqlite:", "postgres:/u:secret@nohost"} {
		s, err := store.Open(ctx, db, t.TempDir())
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", db)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) error shows the password: %v", db, err)
		}
	}
}
