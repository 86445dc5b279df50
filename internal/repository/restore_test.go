package repository

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRestoreOntoExistingData restores onto targets that already hold
// data: the holes and zero chunks of the backup must read as zeros, and a
// larger target keeps its size and the bytes beyond the volume.
func TestRestoreOntoExistingData(t *testing.T) {
	const size = 40 * cs
	tests := []struct {
		name       string
		targetSize int64
	}{
		{"smaller", 10 * cs},
		{"same size", size},
		{"larger", size + 7*cs + 123},
	}
	r, _ := newRepo(t, testOpts)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	writeImage(t, src, size, 1,
		region{kind: "random", off: 0, n: 3 * cs},
		region{kind: "zero", off: 5 * cs, n: 2 * cs}, // written zeros: a zero chunk
		region{kind: "text", off: 10*cs + 100, n: 4 * cs},
		region{kind: "random", off: 30 * cs, n: cs / 2},
	)
	_, vms, _ := backup(t, r, []string{src}, nil)
	want := fileSum(t, src)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := filepath.Join(dir, tt.name+".img")
			junk := bytes.Repeat([]byte{0xa5}, int(tt.targetSize))
			if err := os.WriteFile(dst, junk, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := restore(t, r, vms[0], dst); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			wantLen := max(tt.targetSize, int64(size))
			if int64(len(got)) != wantLen {
				t.Fatalf("target has %d bytes, want %d", len(got), wantLen)
			}
			head := filepath.Join(dir, tt.name+".head")
			os.WriteFile(head, got[:size], 0o600)
			if fileSum(t, head) != want {
				t.Errorf("first %d bytes differ from the backup", size)
			}
			if !bytes.Equal(got[size:], junk[min(int64(len(junk)), size):]) {
				t.Errorf("bytes beyond the volume were changed")
			}
		})
	}
}

// TestRestoreAllocatesNoMoreThanSource checks that a restore to a fresh
// file keeps the holes of the source: no more blocks are allocated.
func TestRestoreAllocatesNoMoreThanSource(t *testing.T) {
	opts := testOpts
	opts.ChunkSize = 1 << 20
	r, _ := newRepo(t, opts)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	writeImage(t, src, 64<<20, 2,
		region{kind: "random", off: 0, n: 3 << 20},
		region{kind: "text", off: 20 << 20, n: 5 << 20},
		region{kind: "zero", off: 40 << 20, n: 4 << 20},
	)
	_, vms, _ := backup(t, r, []string{src}, nil)
	dst := filepath.Join(dir, "dst.img")
	if err := restore(t, r, vms[0], dst); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, dst) != fileSum(t, src) {
		t.Fatal("restored image differs")
	}
	if s, d := blocks(t, src), blocks(t, dst); d > s {
		t.Errorf("restored image has %d blocks allocated, the source %d", d, s)
	}
}

func blocks(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

func TestCheckVolume(t *testing.T) {
	r, _ := newRepo(t, testOpts)
	src := filepath.Join(t.TempDir(), "src.img")
	writeImage(t, src, 4*cs, 3, region{kind: "random", off: 0, n: 4 * cs})
	_, vms, _ := backup(t, r, []string{src}, nil)
	if err := r.CheckVolume(context.Background(), vms[0]); err != nil {
		t.Fatal(err)
	}
	vm := *vms[0]
	vm.Chunks = append([]ChunkID(nil), vm.Chunks...)
	vm.Chunks[2][0] ^= 1
	if err := r.CheckVolume(context.Background(), &vm); err == nil || !bytes.Contains([]byte(err.Error()), []byte("offset 131072")) {
		t.Fatalf("CheckVolume of a volume with an unknown chunk = %v, want an error naming offset %d", err, 2*cs)
	}
}
