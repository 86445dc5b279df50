package service

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"
)

func TestFailReason(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		prefix string
	}{
		{"ENOSPC wrapped", fmt.Errorf("write pack: %w", &fs.PathError{Op: "write", Path: "/repo/tmp/x", Err: syscall.ENOSPC}), "the repository is full"},
		{"ENOSPC as text (from another process)", errors.New("save pack: write /repo/tmp/x: no space left on device"), "the repository is full"},
		{"quota", fmt.Errorf("x: %w", syscall.EDQUOT), "the repository's storage quota"},
		{"other", errors.New("disk web-1-sys: read: input/output error"), "disk web-1-sys"},
	} {
		got := failReason("backup", tc.err)
		if !strings.HasPrefix(got, tc.prefix) || !strings.Contains(got, tc.err.Error()) {
			t.Errorf("%s: %q, want it to start with %q and keep the error", tc.name, got, tc.prefix)
		}
	}
}
