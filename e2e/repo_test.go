package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/repository"
)

// restoreFromRepository reads volume vol of backup itemID straight from the
// repository with its password file (the service must be stopped) and
// returns the SHA-256 of the restored image.
func restoreFromRepository(t *testing.T, e *env, itemID string, vol int) string {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(e.dataDir, "repository.key"))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := repository.Open(filepath.Join(e.dataDir, "repository"), []byte(strings.TrimSpace(string(pw))), repository.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	ctx := context.Background()
	snap, err := repo.LoadSnapshot(ctx, strings.ReplaceAll(itemID, "-", ""))
	if err != nil {
		t.Fatalf("load snapshot of backup %s: %v", itemID, err)
	}
	out := filepath.Join(t.TempDir(), "restored.img")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.RestoreVolume(ctx, &snap.Volumes[vol], f, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return fileHash(t, out)
}
