package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteNewFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "repository.key")
	if err := writeNewFile(p, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if b, _ := os.ReadFile(p); err != nil || string(b) != "secret" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file %v, %v, %q", fi, err, b)
	}
	// A second writer never replaces the first's password.
	if err := writeNewFile(p, []byte("other")); err == nil {
		t.Fatal("writeNewFile replaced an existing file")
	}
	if b, _ := os.ReadFile(p); string(b) != "secret" {
		t.Fatalf("the file holds %q after a refused second write", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}
