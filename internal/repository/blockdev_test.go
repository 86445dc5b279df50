package repository

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreToBlockDevice restores onto a real block device (a loop device
// over a file full of junk): zero chunks must be zeroed on the device, and
// everything must match the source byte for byte. It needs root and
// losetup, and is skipped without them.
func TestRestoreToBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("needs losetup")
	}
	const size = 64 * cs // a multiple of 512: loop devices have whole sectors
	r, _ := newRepo(t, testOpts)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	writeImage(t, src, size, 4,
		region{kind: "random", off: cs + 100, n: 3 * cs},
		region{kind: "zero", off: 10 * cs, n: 2 * cs},
		region{kind: "text", off: 40 * cs, n: 10 * cs})
	_, vms, _ := backup(t, r, []string{src}, nil)

	back := filepath.Join(dir, "device.img")
	if err := os.WriteFile(back, bytes.Repeat([]byte{0x5a}, size+8*cs), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", back).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })

	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RestoreVolume(t.Context(), vms[0], f, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := make([]byte, size+8*cs)
	g, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	if !bytes.Equal(got[:size], want) {
		t.Fatal("device content differs from the source volume")
	}
	if !bytes.Equal(got[size:], bytes.Repeat([]byte{0x5a}, 8*cs)) {
		t.Fatal("bytes beyond the volume were changed")
	}

	// Backing up the device (no SEEK_DATA on block devices: all of it is
	// read) gives the same manifest.
	b := r.NewBackup()
	defer b.Abort()
	vm, st, err := b.Volume(t.Context(), dev, size, vms[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if !equalChunks(vm.Chunks, vms[0].Chunks) || st.NewChunks != 0 || st.ChangedBytes != 0 {
		t.Fatalf("backup of the restored device differs: %+v", st)
	}
}
