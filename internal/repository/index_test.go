package repository

import (
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
