package repository

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"
)

// TestEntrySize guards the memory per chunk of the index (issue 11: it was
// 75-112 bytes with a map).
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n != 44 {
		t.Fatalf("an index entry takes %d bytes, want 44", n)
	}
}

// TestIndexLengths: the plaintext length an entry implies is the one
// stored, for raw, compressed and short compressed chunks.
func TestIndexLengths(t *testing.T) {
	x := newIndex(4 << 20)
	for _, e := range []packEntry{
		{ID: ChunkID{1}, Offset: 0, Length: 100 + sealOverhead, RawLen: 100, Flags: flagRaw},
		{ID: ChunkID{2}, Offset: 4096, Length: 5000, RawLen: 4 << 20, Flags: flagZstd},
		{ID: ChunkID{3}, Offset: 12288, Length: 300, RawLen: 12345, Flags: flagZstd},
	} {
		en := x.makeEntryLocked(7, e)
		if got := x.packEntryLocked(&en); got != e {
			t.Fatalf("entry of %+v reads back as %+v", e, got)
		}
	}
}

// TestCompactPacks: after the index drops the packs GC removed (and
// renumbers the others), every backup still restores and deduplicates.
func TestCompactPacks(t *testing.T) {
	t.Parallel()
	r, _ := newRepo(t, testOpts)
	ctx := context.Background()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeImage(t, a, 40*cs, 71, region{kind: "random", off: 0, n: 40 * cs})
	writeImage(t, b, 40*cs, 72, region{kind: "random", off: 0, n: 40 * cs})
	ida, _, _ := backup(t, r, []string{a}, nil)
	_, vmsB, _ := backup(t, r, []string{b}, nil)
	if err := r.DeleteSnapshot(ctx, ida); err != nil {
		t.Fatal(err)
	}
	if st, err := r.GC(ctx); err != nil || st.PacksDeleted == 0 {
		t.Fatalf("GC: %+v %v", st, err)
	}
	packs := len(r.idx.packs)
	if n := r.idx.compactPacks(0); n == 0 || len(r.idx.packs) >= packs {
		t.Fatalf("compaction dropped %d packs (%d -> %d)", n, packs, len(r.idx.packs))
	}
	checkRestores(t, r, vmsB[0], b, "after compaction")
	_, _, sts := backup(t, r, []string{b}, nil)
	if sts[0].NewChunks != 0 {
		t.Fatalf("after compaction a backup of the same data stored %d chunks", sts[0].NewChunks)
	}
	_, vmsA, sts := backup(t, r, []string{a}, nil)
	if sts[0].NewChunks == 0 {
		t.Fatal("after compaction a backup deduplicated against removed packs")
	}
	checkRestores(t, r, vmsA[0], a, "a backup made after compaction")
	if rep, err := r.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
}

// TestUpgradeOldVersions: a repository of version 1 (flock and generation
// file), 2 (no config MAC) or 3 (no S2 chunks) opens, is upgraded to the
// current version (with its MAC) so that older programs refuse it, and its
// backups restore.
func TestUpgradeOldVersions(t *testing.T) {
	t.Parallel()
	for _, v := range []int{1, 2, 3} {
		t.Run(fmt.Sprint("version ", v), func(t *testing.T) {
			t.Parallel()
			r, dir := newRepo(t, testOpts)
			p := filepath.Join(t.TempDir(), "img")
			writeImage(t, p, 10*cs, 81, region{kind: "random", off: 0, n: 10 * cs})
			_, vms, _ := backup(t, r, []string{p}, nil)
			r.Close()
			cfgPath := filepath.Join(dir, "config")
			var c config
			b, err := os.ReadFile(cfgPath)
			if err != nil || json.Unmarshal(b, &c) != nil || c.Version != repoVersion || c.MAC == "" {
				t.Fatalf("a new repository's config: %s %v", b, err)
			}
			c.Version, c.MAC = v, "" // as version 1 and 2 wrote it
			if v >= 3 {
				c.MAC = c.mac(r.keys)
			}
			old, _ := json.Marshal(c)
			if err := os.WriteFile(cfgPath, old, 0o600); err != nil {
				t.Fatal(err)
			}
			r2, err := Open(dir, password, testOpts)
			if err != nil {
				t.Fatal(err)
			}
			defer r2.Close()
			b, _ = os.ReadFile(cfgPath)
			if json.Unmarshal(b, &c) != nil || c.Version != repoVersion || c.check(r2.keys) != nil {
				t.Fatalf("config after opening a version-%d repository: %s", v, b)
			}
			checkRestores(t, r2, vms[0], p, "after the upgrade")
		})
	}
}

// TestConfigAuthenticated: a version-3 config whose fields were changed,
// or whose MAC was removed, is refused once the password opened the key.
func TestConfigAuthenticated(t *testing.T) {
	t.Parallel()
	r, dir := newRepo(t, testOpts)
	r.Close()
	cfgPath := filepath.Join(dir, "config")
	good, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*config)
	}{
		{"chunk size changed", func(c *config) { c.ChunkSize *= 2 }},
		{"id changed", func(c *config) { c.ID = newID() }},
		{"MAC removed", func(c *config) { c.MAC = "" }},
		{"MAC of another key", func(c *config) { c.MAC = strings.Repeat("ab", 32) }},
	} {
		var c config
		if err := json.Unmarshal(good, &c); err != nil {
			t.Fatal(err)
		}
		tc.edit(&c)
		b, _ := json.Marshal(c)
		if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if r, err := Open(dir, password, testOpts); err == nil || !strings.Contains(err.Error(), "config fails authentication") {
			if r != nil {
				r.Close()
			}
			t.Errorf("%s: open: %v; want refused, saying the config fails authentication", tc.name, err)
		}
	}
	if err := os.WriteFile(cfgPath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(dir, password, testOpts)
	if err != nil {
		t.Fatalf("the config put back: %v", err)
	}
	r2.Close()
}
