package repository

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// The fuzz targets drive every parser of bytes read from storage. Seeds are
// real encodings; the property is: an error or a value that passes the
// parser's own checks, never a panic.

func seedEntries() []packEntry {
	return []packEntry{
		{ID: ChunkID{1}, Offset: 0, Length: 100 + sealOverhead, RawLen: 100, Flags: flagRaw},
		{ID: ChunkID{2}, Offset: 128, Length: 50, RawLen: 4 << 20, Flags: flagZstd},
		{ID: ChunkID{3}, Offset: 256, Length: 60, RawLen: 4 << 20, Flags: flagS2},
	}
}

func FuzzIndex(f *testing.F) {
	f.Add(encodePackIndex(packID{9}, seedEntries()))
	f.Add(encodePackIndex(packID{}, nil))
	f.Add([]byte(indexMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, entries, err := decodePackIndex(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		if again := encodePackIndex(id, entries); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
		for _, e := range entries {
			if e.check() != nil {
				t.Fatalf("accepted invalid entry %+v", e)
			}
		}
	})
}

// FuzzPackTrailer feeds whole pack files: the trailer is located, opened and
// parsed with a fixed key, as Verify and GC do.
func FuzzPackTrailer(f *testing.F) {
	k, _ := deriveKeys(bytes.Repeat([]byte{7}, masterKeyLen))
	id := packID{0xab}
	pack := func(entries []packEntry, body int) []byte {
		b := make([]byte, body)
		tr := seal(k.aead, encodePackIndex(id, entries), aadTrailer)
		b = append(b, tr...)
		return binary.LittleEndian.AppendUint32(b, uint32(len(tr)))
	}
	f.Add(pack(seedEntries(), 200))
	f.Add(pack(nil, 0))
	f.Add([]byte{1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) < packTailLen {
			return
		}
		off, n, err := trailerBounds(p[len(p)-packTailLen:], int64(len(p)))
		if err != nil {
			return
		}
		if off < 0 || int(off)+n+packTailLen != len(p) {
			t.Fatalf("bounds %d+%d outside a pack of %d bytes", off, n, len(p))
		}
		entries, err := decodeTrailer(k, id.String(), p[off:int(off)+n], off)
		if err != nil {
			return
		}
		for _, e := range entries {
			if int64(e.Offset)+int64(e.Length) > off {
				t.Fatalf("entry %+v reaches into the trailer at %d", e, off)
			}
		}
	})
}

func FuzzSnapshot(f *testing.F) {
	enc, _ := snapshotCodec()
	s := &Snapshot{Time: time.Unix(1700000000, 0).UTC(), Meta: map[string]string{"server": "a"},
		Volumes: []VolumeManifest{{VolumeID: "v", Name: "n", Size: 5 << 20, ChunkSize: 4 << 20, Chunks: []ChunkID{{1}, {}}}}}
	js, _ := json.Marshal(s)
	f.Add(enc.EncodeAll(js, nil))
	f.Add(enc.EncodeAll([]byte(`{"volumes":[{"size":-1}]}`), nil))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSnapshot(b)
		if err != nil {
			return
		}
		for _, vm := range s.Volumes {
			if vm.check() != nil {
				t.Fatal("accepted an inconsistent manifest")
			}
		}
	})
}

func FuzzSnapshotJSON(f *testing.F) {
	f.Add([]byte(`{"time":"2024-01-01T00:00:00Z","volumes":[{"volume_id":"v","size":4096,"chunk_size":4096,"chunks":["` +
		ChunkID{1}.String() + `"]}]}`))
	f.Add([]byte(`{"volumes":[{"size":1,"chunk_size":0,"chunks":[]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSnapshotJSON(b)
		if err != nil {
			return
		}
		for _, vm := range s.Volumes {
			if n := (vm.Size + int64(vm.ChunkSize) - 1) / int64(vm.ChunkSize); int64(len(vm.Chunks)) != n {
				t.Fatal("accepted a manifest whose chunks do not cover its size")
			}
		}
	})
}

func FuzzKeyFile(f *testing.F) {
	kf, _ := newKeyFile([]byte("pw"), make([]byte, masterKeyLen), 1, 8)
	b, _ := json.Marshal(kf)
	f.Add(b)
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":4294967295,"memory_kib":4294967295}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeKeyFile(b)
		if err != nil {
			return
		}
		if k.MemoryKiB > maxKDFMemoryKiB || k.Time > maxKDFTime {
			t.Fatal("accepted KDF parameters beyond the limits")
		}
	})
}

func FuzzConfig(f *testing.F) {
	f.Add([]byte(`{"version":1,"id":"abc","chunk_size":4194304}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeConfig(b)
		if err == nil && (c.ChunkSize < minChunkSize || c.ChunkSize > maxChunkSize) {
			t.Fatal("accepted chunk size out of range")
		}
	})
}

// TestSealedReadersRejectGarbage covers the decryption step in front of the
// parsers: garbage, truncation and a blob of another kind all fail with
// errAuth.
func TestSealedReadersRejectGarbage(t *testing.T) {
	k, _ := deriveKeys(bytes.Repeat([]byte{7}, masterKeyLen))
	plain := encodePackIndex(packID{1}, seedEntries())
	idx := seal(k.aead, plain, aadIndex)
	tests := []struct {
		name string
		blob []byte
		aad  []byte
	}{
		{"empty", nil, aadIndex},
		{"short", idx[:10], aadIndex},
		{"truncated", idx[:len(idx)-1], aadIndex},
		{"flipped", append(append([]byte(nil), idx[:20]...), append([]byte{idx[20] ^ 1}, idx[21:]...)...), aadIndex},
		{"index as trailer", idx, aadTrailer},
		{"index as snapshot", idx, aadSnapshot("x")},
		{"index as quarantine record", idx, aadQuarantine},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := open(k.aead, nil, tc.blob, tc.aad); err != errAuth {
				t.Fatalf("open = %v, want errAuth", err)
			}
		})
	}
	if got, err := open(k.aead, nil, idx, aadIndex); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open of a good blob: %v", err)
	}
}

func FuzzIndex2(f *testing.F) {
	good, _ := encodeIndex2(3, []string{packID{5}.String()}, []parsedPack{{id: packID{9}, tomb: -1, entries: seedEntries()}, {id: packID{8}}})
	f.Add(good)
	f.Add([]byte(index2Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		gen, sup, packs, err := decodeIndex2(b)
		if err != nil {
			return
		}
		if len(packs) > maxIndexPacks {
			t.Fatalf("accepted %d packs", len(packs))
		}
		again, err := encodeIndex2(gen, sup, packs)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %v", err)
		}
		for _, p := range packs {
			if p.tomb < -1 {
				t.Fatal("accepted a bad tombstone")
			}
			p.each(func(e packEntry) {
				if e.check() != nil {
					t.Fatalf("accepted invalid entry %+v", e)
				}
			})
		}
	})
}

func FuzzLease(f *testing.F) {
	f.Add([]byte(`{"kind":"backup","host":"h","pid":1,"start":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"kind":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLease(b)
		if err != nil {
			return
		}
		if len(b) > maxLeaseSize || l.Kind == "" || len(l.Host) > 256 {
			t.Fatalf("accepted %+v from %d bytes", l, len(b))
		}
	})
}

func FuzzQuarantine(f *testing.F) {
	rec, _ := json.Marshal(quarRecord{Time: time.Unix(1700000000, 0).UTC(), Reason: "verify",
		Copies: []quarCopy{{Pack: packID{7}.String(), Chunk: ChunkID{1}, Offset: 4096}}})
	f.Add(rec)
	f.Add([]byte(`{"copies":[{"pack":"zz","chunk":"00","offset":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		copies, err := decodeQuarantine(b)
		if err != nil {
			if !isDamage(err) {
				t.Fatalf("a bad record is not damage: %v", err)
			}
			return
		}
		for _, c := range copies {
			if _, err := parsePackID(c.pack.String()); err != nil {
				t.Fatalf("accepted pack id %v", c.pack)
			}
		}
	})
}

// FuzzDecompress feeds compressed chunks (as they are once decrypted): an
// error or exactly the raw length the index gives, and nothing written past
// it, whatever the bytes claim.
func FuzzDecompress(f *testing.F) {
	plain := bytes.Repeat([]byte("a log line of a server disk\n"), 100)
	ze, _ := zstd.NewWriter(nil)
	f.Add(s2.Encode(nil, plain), uint8(flagS2), uint16(len(plain)))
	f.Add(ze.EncodeAll(plain, nil), uint8(flagZstd), uint16(len(plain)))
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true), zstd.WithDecoderMaxMemory(maxChunkSize))
	f.Fuzz(func(t *testing.T, src []byte, flags uint8, rawLen uint16) {
		if rawLen == 0 {
			return
		}
		out := bytes.Repeat([]byte{0xee}, int(rawLen)+64)
		got, err := decompress(dec, flags, src, out, int(rawLen))
		if err == nil && len(got) != int(rawLen) {
			t.Fatalf("decoded %d bytes, want %d", len(got), rawLen)
		}
		if !bytes.Equal(out[rawLen:], bytes.Repeat([]byte{0xee}, 64)) {
			t.Fatal("wrote past the raw length")
		}
	})
}
