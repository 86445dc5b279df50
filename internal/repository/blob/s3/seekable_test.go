package s3

import (
	"io"
	"os"
	"strings"
	"testing"
)

// TestSeekableSpoolHasNoName: a body that cannot seek is spooled to a file
// without a name, so a process killed during the upload leaves nothing in
// the temporary directory (before, a csbs-s3-* file stayed there).
func TestSeekableSpoolHasNoName(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	body := strings.Repeat("spooled ", 1000)
	sr, n, cleanup, err := seekable(io.MultiReader(strings.NewReader(body))) // hides Seek
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 0 {
		t.Fatalf("temporary directory during the upload: %v %v; want empty", ents, err)
	}
	got, err := io.ReadAll(sr)
	if err != nil || n != int64(len(body)) || string(got) != body {
		t.Fatalf("spooled %d bytes, read back %d (%v); want the body", n, len(got), err)
	}
}
