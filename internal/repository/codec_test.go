package repository

import (
	"bytes"
	"context"
	"crypto/cipher"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// TestCodecs: each codec stores a chunk with the flag it names when that
// shrinks it and raw when not, and every stored chunk opens to the same
// bytes, whatever the codec of the process reading it.
func TestCodecs(t *testing.T) {
	t.Parallel()
	k, _ := deriveKeys(make([]byte, masterKeyLen))
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true))
	defer dec.Close()
	rng := rand.New(rand.NewPCG(7, 8))
	random := randomBytes(rng, cs)
	data := map[string][]byte{
		"text":       textBytes(rng, cs),
		"random":     random,
		"one byte":   bytes.Repeat([]byte{0xa5}, cs),
		"short text": textBytes(rng, 1000), // shorter than the samples: always tried
		"short rand": random[:1000],
	}
	tests := []struct {
		codec Compression
		data  string
		flags uint8
	}{
		{CompressS2, "text", flagS2},
		{CompressS2, "random", flagRaw},
		{CompressS2, "one byte", flagS2},
		{CompressS2, "short text", flagS2},
		{CompressS2, "short rand", flagRaw},
		{CompressZstd, "text", flagZstd},
		{CompressZstd, "random", flagRaw},
		{CompressZstd, "one byte", flagZstd},
		{CompressZstd, "short text", flagZstd},
		{CompressZstd, "short rand", flagRaw},
		{CompressNone, "text", flagRaw},
		{CompressNone, "one byte", flagRaw},
	}
	for _, tc := range tests {
		t.Run(string(tc.codec)+"/"+tc.data, func(t *testing.T) {
			s := newSlot(cs)
			plain := data[tc.data]
			h := newHasher(k)
			id := h.sum(plain)
			blob, flags := sealChunk(s, tc.codec, k.aead, id, plain)
			if flags != tc.flags {
				t.Fatalf("flags %d, want %d", flags, tc.flags)
			}
			if flags != flagRaw && len(blob)-sealOverhead >= len(plain) {
				t.Fatalf("compressed %d bytes to %d", len(plain), len(blob)-sealOverhead)
			}
			loc := location{length: uint32(len(blob)), rawLen: uint32(len(plain)), flags: flags}
			e := packEntry{ID: id, Length: loc.length, RawLen: loc.rawLen, Flags: flags}
			if err := e.check(); err != nil {
				t.Fatalf("its pack entry is refused: %v", err)
			}
			out := make([]byte, cs)
			got, err := openChunk(k, dec, h, id, loc, blob, out)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("open: %v (equal %v)", err, bytes.Equal(got, plain))
			}
		})
	}
}

// sealChunk is what a backup stores of a chunk: compressed by s (when that
// pays) and sealed, in a new slice.
func sealChunk(s *slot, c Compression, aead cipher.AEAD, id ChunkID, data []byte) ([]byte, uint8) {
	payload, flags := s.compress(c, data)
	blob := make([]byte, nonceLen+len(payload)+tagLen)
	sealTo(aead, blob, payload, id[:])
	return blob, flags
}

// TestDecompressChecksLength: a compressed chunk that decodes to another
// length than its index entry says is refused, and decoding never writes
// past the raw length (out beyond it stays untouched).
func TestDecompressChecksLength(t *testing.T) {
	t.Parallel()
	plain := textBytes(rand.New(rand.NewPCG(1, 1)), 4096)
	ze, _ := zstd.NewWriter(nil)
	dec, _ := zstd.NewReader(nil, zstd.WithDecodeAllCapLimit(true))
	defer dec.Close()
	encoded := map[uint8][]byte{flagS2: s2.Encode(nil, plain), flagZstd: ze.EncodeAll(plain, nil)}
	for _, tc := range []struct {
		name   string
		flags  uint8
		rawLen int
		ok     bool
	}{
		{"s2 exact", flagS2, 4096, true},
		{"s2 longer than its entry", flagS2, 4000, false},
		{"s2 shorter than its entry", flagS2, 5000, false},
		{"zstd exact", flagZstd, 4096, true},
		{"zstd longer than its entry", flagZstd, 4000, false},
		{"zstd shorter than its entry", flagZstd, 5000, false},
		{"unknown flags", 3, 4096, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := bytes.Repeat([]byte{0xee}, 8192)
			src := encoded[tc.flags]
			if src == nil {
				src = encoded[flagS2]
			}
			got, err := decompress(dec, tc.flags, src, out, tc.rawLen)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok %v", err, tc.ok)
			}
			if tc.ok && !bytes.Equal(got, plain) {
				t.Fatal("decoded bytes differ")
			}
			if !bytes.Equal(out[tc.rawLen:], bytes.Repeat([]byte{0xee}, 8192-tc.rawLen)) {
				t.Fatal("wrote past the raw length")
			}
		})
	}
}

// TestMixedCodecs: a repository holds chunks of every codec. Backups made
// by processes with different settings deduplicate against each other and
// restore, Verify accepts them, and GC keeps what it copies readable.
func TestMixedCodecs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	writeImage(t, img, 24*cs, 5, region{kind: "text", off: 0, n: 8 * cs}, region{kind: "random", off: 8 * cs, n: 8 * cs})
	zopts := testOpts
	zopts.Compression = CompressZstd
	r, rdir := newRepo(t, zopts)
	_, vms, _ := backup(t, r, []string{img}, nil)
	first := vms[0]

	// Another process, S2: the same data is deduplicated; new text is S2.
	sopts := testOpts
	sopts.Compression = CompressS2
	r = reopen(t, r, rdir, sopts)
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(textBytes(rand.New(rand.NewPCG(9, 9)), 8*cs), 16*cs); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, vms, sts := backup(t, r, []string{img}, nil)
	if sts[0].NewChunks != 8 {
		t.Fatalf("the second backup stored %d new chunks, want the 8 written (the rest deduplicated)", sts[0].NewChunks)
	}
	flags := map[uint8]int{}
	byPack, _ := r.idx.entriesByPack()
	for _, es := range byPack {
		for _, e := range es {
			flags[e.Flags]++
		}
	}
	if flags[flagZstd] != 8 || flags[flagS2] != 8 || flags[flagRaw] != 8 {
		t.Fatalf("chunks by flags %v: want 8 zstd, 8 S2 and 8 raw", flags)
	}

	// A third process without compression reads both, and so does GC.
	nopts := testOpts
	nopts.Compression = CompressNone
	r = reopen(t, r, rdir, nopts)
	if rep, err := r.Verify(context.Background()); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
	checkRestores(t, r, vms[0], img, "the S2 backup")
	if _, err := r.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "first")
	if err := restore(t, r, first, out); err != nil {
		t.Fatal(err)
	}
}

// TestAutoCompression: by default a volume's first backup stores its
// chunks with S2 and a backup with a parent with zstd; a backup without a
// parent is a first one even when the repository holds others.
func TestAutoCompression(t *testing.T) {
	t.Parallel()
	r, _ := newRepo(t, testOpts) // Compression unset: auto
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	writeImage(t, img, 8*cs, 3, region{kind: "text", off: 0, n: 4 * cs})
	flags := func() map[uint8]int {
		m := map[uint8]int{}
		byPack, _ := r.idx.entriesByPack()
		for _, es := range byPack {
			for _, e := range es {
				m[e.Flags]++
			}
		}
		return m
	}
	_, vms, _ := backup(t, r, []string{img}, nil)
	if got := flags(); got[flagS2] != 4 || len(got) != 1 {
		t.Fatalf("first backup: chunks by flags %v, want 4 S2", got)
	}
	rewrite := func(seed uint64, off int64) {
		f, err := os.OpenFile(img, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(textBytes(rand.New(rand.NewPCG(seed, seed)), 2*cs), off); err != nil {
			t.Fatal(err)
		}
	}
	rewrite(11, 4*cs)
	backup(t, r, []string{img}, vms)
	if got := flags(); got[flagS2] != 4 || got[flagZstd] != 2 {
		t.Fatalf("after an incremental: chunks by flags %v, want 4 S2 and 2 zstd", got)
	}
	rewrite(12, 6*cs)
	backup(t, r, []string{img}, nil) // no parent: a first backup
	if got := flags(); got[flagS2] != 6 || got[flagZstd] != 2 {
		t.Fatalf("after another first backup: chunks by flags %v, want 6 S2 and 2 zstd", got)
	}
	if rep, err := r.Verify(context.Background()); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
}

// TestCompressionOption: an unknown codec is refused when a repository is
// made or opened, naming what is allowed.
func TestCompressionOption(t *testing.T) {
	t.Parallel()
	bad := testOpts
	bad.Compression = "lz4"
	if _, err := Init(filepath.Join(t.TempDir(), "repo"), password, bad); err == nil || !bytes.Contains([]byte(err.Error()), []byte(`compression "lz4": want auto, s2, zstd or none`)) {
		t.Fatalf("init: %v", err)
	}
	r, dir := newRepo(t, testOpts)
	r.Close()
	if _, err := Open(dir, password, bad); err == nil || !bytes.Contains([]byte(err.Error()), []byte(`compression "lz4"`)) {
		t.Fatalf("open: %v", err)
	}
}

// TestKeysAndIDsStable pins what the master key derives to and the ids of
// chunks: they name every chunk already stored, so a change (of library,
// say) would turn every stored chunk into "damaged" at the next verify and
// stop deduplication against it. The values were computed with
// github.com/zeebo/blake3, the library of the first repositories.
func TestKeysAndIDsStable(t *testing.T) {
	t.Parallel()
	master := make([]byte, masterKeyLen)
	for i := range master {
		master[i] = byte(i)
	}
	k, err := deriveKeys(master)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20+123) // several BLAKE3 chunks and a partial one
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	id := newHasher(k).sum(data)
	did := newDomainHasher(k, "proj").sum(data[:1000])
	for _, tc := range []struct{ name, got, want string }{
		{"chunk id key", hex.EncodeToString(k.idKey[:]), "a6f7302fdfadea8e9b4bd6a3d125630135e516c1f273034ef40ee21607b4c5b9"},
		{"config key", hex.EncodeToString(k.cfgKey[:]), "97293b87d649fdae98e5e21772d2f72cc4077c576c513a3990a2515c3af4ed1a"},
		{"chunk id", hex.EncodeToString(id[:]), "53521fe3cba2c212adb4d56f08b04ec0c963ebf8f1bda80ba99710bce8f17afb"},
		{"chunk id in a domain", hex.EncodeToString(did[:]), "04d2409ef5249a9f792b587e9c1fa9e3fbd2410e93938a4cf9dcef6dafec0b94"},
		{"config MAC", config{Version: 4, ID: "abc", ChunkSize: 1 << 20}.mac(k), "bdffb46f20dcefecf333fcb4a45b6f98967360072147b32341356ae81de246aa"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}
