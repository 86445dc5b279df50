package repository

import (
	"crypto/hmac"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/zeebo/blake3"
)

// This file holds the encodings of everything the repository reads back from
// storage. Each decoder is a pure function over bytes that returns an error
// (never panics) on any input, so the fuzz tests can drive it directly.

// ChunkID identifies a chunk: the keyed BLAKE3 hash of its plaintext. The
// zero value stands for a hole or an all-zero chunk, which is never stored.
type ChunkID [32]byte

// IsZero reports whether id is the hole/all-zero id.
func (id ChunkID) IsZero() bool { return id == ChunkID{} }

func (id ChunkID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText encodes id as 64 hex digits.
func (id ChunkID) MarshalText() ([]byte, error) {
	b := make([]byte, 64)
	hex.Encode(b, id[:])
	return b, nil
}

// UnmarshalText decodes 64 hex digits.
func (id *ChunkID) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("chunk id: want 64 hex digits, got %d bytes", len(b))
	}
	_, err := hex.Decode(id[:], b)
	return err
}

// packID names a pack (and its index file).
type packID [16]byte

func (id packID) String() string { return hex.EncodeToString(id[:]) }

func parsePackID(s string) (packID, error) {
	var id packID
	if len(s) != 32 {
		return id, fmt.Errorf("pack id %q: want 32 hex digits", s)
	}
	_, err := hex.Decode(id[:], []byte(s))
	return id, err
}

// Chunk flags, stored per chunk in the pack trailer and index.
const (
	flagRaw  = 0 // stored as is
	flagZstd = 1 // zstd-compressed
	flagS2   = 2 // S2-compressed (repository version 4)
)

const (
	maxChunkSize = 64 << 20 // largest chunk a repository may use
	minChunkSize = 4 << 10
	maxPackSize  = 1 << 30 // offsets are uint32
)

// packEntry says where one chunk lies inside a pack.
type packEntry struct {
	ID     ChunkID
	Offset uint32 // of the encrypted blob in the pack
	Length uint32 // of the encrypted blob: nonce + ciphertext + tag
	RawLen uint32 // of the plaintext chunk
	Flags  uint8
}

// Index plaintext (the same in the pack trailer and in index/<packid>):
//
//	magic "CSBSIDX1" | pack id (16) | count uint32 LE | count × entry
//	entry: chunk id (32) | offset u32 | length u32 | raw length u32 | flags u8
const (
	indexMagic     = "CSBSIDX1"
	indexHeaderLen = 8 + 16 + 4 // magic, pack id, count
	entryLen       = 32 + 4 + 4 + 4 + 1
)

func encodePackIndex(id packID, entries []packEntry) []byte {
	b := make([]byte, indexHeaderLen, indexHeaderLen+len(entries)*entryLen)
	copy(b, indexMagic)
	copy(b[len(indexMagic):], id[:])
	binary.LittleEndian.PutUint32(b[len(indexMagic)+16:], uint32(len(entries)))
	for _, e := range entries {
		b = append(b, e.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, e.Offset)
		b = binary.LittleEndian.AppendUint32(b, e.Length)
		b = binary.LittleEndian.AppendUint32(b, e.RawLen)
		b = append(b, e.Flags)
	}
	return b
}

// decodePackIndex parses an index plaintext and checks that its entries are
// consistent: blobs in ascending, non-overlapping order, lengths that fit
// their flags, nothing bigger than the largest possible chunk.
func decodePackIndex(b []byte) (packID, []packEntry, error) {
	var id packID
	if len(b) < indexHeaderLen || string(b[:len(indexMagic)]) != indexMagic {
		return id, nil, errors.New("pack index: bad header")
	}
	copy(id[:], b[len(indexMagic):])
	n := binary.LittleEndian.Uint32(b[len(indexMagic)+16:])
	rest := b[indexHeaderLen:]
	if uint64(n)*entryLen != uint64(len(rest)) {
		return id, nil, fmt.Errorf("pack index: %d entries announced, %d bytes present", n, len(rest))
	}
	entries := make([]packEntry, n)
	err := checkEntries(rest, func(i int, e packEntry) { entries[i] = e })
	if err != nil {
		return id, nil, fmt.Errorf("pack index: %w", err)
	}
	return id, entries, nil
}

// checkEntries decodes and checks the entries encoded in raw (a multiple of
// entryLen bytes), calling fn with each.
func checkEntries(raw []byte, fn func(i int, e packEntry)) error {
	var end uint64
	for i := 0; i*entryLen < len(raw); i++ {
		e := decodeEntry(raw[i*entryLen:])
		if err := e.check(); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if uint64(e.Offset) < end {
			return fmt.Errorf("entry %d overlaps the previous one", i)
		}
		end = uint64(e.Offset) + uint64(e.Length)
		if end > maxPackSize {
			return fmt.Errorf("entry %d ends beyond the largest pack size", i)
		}
		if fn != nil {
			fn(i, e)
		}
	}
	return nil
}

func decodeEntry(p []byte) packEntry {
	var e packEntry
	copy(e.ID[:], p)
	e.Offset = binary.LittleEndian.Uint32(p[32:])
	e.Length = binary.LittleEndian.Uint32(p[36:])
	e.RawLen = binary.LittleEndian.Uint32(p[40:])
	e.Flags = p[44]
	return e
}

func (e *packEntry) check() error {
	switch {
	case e.ID.IsZero():
		return errors.New("zero chunk id")
	case e.RawLen == 0 || e.RawLen > maxChunkSize:
		return fmt.Errorf("raw length %d out of range", e.RawLen)
	case e.Length < sealOverhead:
		return fmt.Errorf("length %d shorter than the encryption overhead", e.Length)
	case e.Flags > flagS2:
		return fmt.Errorf("unknown flags %#x", e.Flags)
	case e.Flags == flagRaw && e.Length != e.RawLen+sealOverhead:
		return fmt.Errorf("raw chunk of %d bytes stored in %d bytes", e.RawLen, e.Length)
	case e.Flags != flagRaw && e.Length-sealOverhead >= e.RawLen:
		return fmt.Errorf("compressed chunk not smaller than its %d bytes", e.RawLen)
	}
	return nil
}

// Pack layout: blob | blob | ... | sealed trailer | trailer length (uint32 LE).
// A blob is nonce | ciphertext | tag of one chunk, sealed with the chunk id
// as additional data; every blob starts at a multiple of 4 KiB (random
// padding in between, so nothing shows where a blob ends) so packs can be
// written with direct I/O.
const packTailLen = 4

// maxTrailerLen bounds what is read of a trailer before it is
// authenticated, so a hostile pack cannot make a reader allocate more: a
// pack of at most maxPackSize holds at most maxPackSize/align blobs.
const maxTrailerLen = sealOverhead + indexHeaderLen + (maxPackSize/align)*entryLen

// trailerBounds returns where the sealed trailer lies in a pack of size
// bytes whose last packTailLen bytes are tail.
func trailerBounds(tail []byte, size int64) (off int64, n int, err error) {
	if len(tail) != packTailLen || size < packTailLen+sealOverhead+indexHeaderLen {
		return 0, 0, fmt.Errorf("pack of %d bytes is too short", size)
	}
	l := int64(binary.LittleEndian.Uint32(tail))
	if l < sealOverhead+indexHeaderLen || l > size-packTailLen || l > maxTrailerLen {
		return 0, 0, fmt.Errorf("pack trailer length %d does not fit a pack of %d bytes", l, size)
	}
	return size - packTailLen - l, int(l), nil
}

// config is the plaintext config file: what a reader needs before the key.
// From version 3 it carries a MAC keyed from the master key: a config
// changed or damaged (a chunk size that would break deduplication) is
// refused once the password opened the key.
type config struct {
	Version   int    `json:"version"`
	ID        string `json:"id"`
	ChunkSize int    `json:"chunk_size"`
	MAC       string `json:"mac,omitempty"`
}

// mac is the config's MAC: keyed BLAKE3 of its fields.
func (c config) mac(k *keys) string {
	h, _ := blake3.NewKeyed(k.cfgKey[:]) // fails only for a key of another length
	fmt.Fprintf(h, "csbs config\nversion %d\nid %s\nchunk_size %d\n", c.Version, c.ID, c.ChunkSize)
	return hex.EncodeToString(h.Sum(nil))
}

// check verifies the MAC of a version-3 config.
func (c config) check(k *keys) error {
	if c.Version < 3 {
		return nil
	}
	if !hmac.Equal([]byte(c.MAC), []byte(c.mac(k))) {
		return errors.New("config fails authentication: it was changed or damaged (its version, id or chunk size); put back a copy of the repository's config file")
	}
	return nil
}

// repoVersion 2 adds leases and consolidated index files with tombstones;
// 3 the config's MAC and quarantine records; 4 S2-compressed chunks
// (flagS2). Open upgrades an older
// repository by rewriting its config (once the password opened it), so
// that programs that know only an older version refuse it rather than
// ignore what they do not know.
const (
	repoVersion    = 4
	minRepoVersion = 1
)

func decodeConfig(b []byte) (config, error) {
	var c config
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	if c.Version < minRepoVersion || c.Version > repoVersion {
		return c, fmt.Errorf("config: repository version %d is not supported (this program reads versions %d to %d)", c.Version, minRepoVersion, repoVersion)
	}
	if c.ChunkSize < minChunkSize || c.ChunkSize > maxChunkSize || c.ChunkSize%align != 0 {
		return c, fmt.Errorf("config: chunk size %d out of range", c.ChunkSize)
	}
	if c.ID == "" {
		return c, errors.New("config: no repository id")
	}
	return c, nil
}

// VolumeManifest is one volume of a snapshot: its size and the ordered ids of
// its chunks (chunk i covers bytes [i*ChunkSize, (i+1)*ChunkSize) ∩ [0, Size)).
// A zero id is a hole or an all-zero chunk.
type VolumeManifest struct {
	VolumeID  string    `json:"volume_id"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	ChunkSize int       `json:"chunk_size"`
	Chunks    []ChunkID `json:"chunks"`
	// Domain is the dedup domain the chunk ids were computed in (see
	// Repository.NewBackupIn); "" is the repository-wide one.
	Domain string `json:"domain,omitempty"`
}

// Snapshot is the record of one server backup. It lists every chunk of every
// volume, so it restores alone; deleting another snapshot never affects it.
type Snapshot struct {
	ID      string            `json:"-"` // the file name; chosen by the caller of Commit, or random when empty
	Time    time.Time         `json:"time"`
	Meta    map[string]string `json:"meta,omitempty"`
	Volumes []VolumeManifest  `json:"volumes"`
}

// check reports a manifest whose chunk list does not match its size.
func (vm *VolumeManifest) check() error {
	if vm.Size < 0 {
		return fmt.Errorf("volume %q: negative size", vm.VolumeID)
	}
	if vm.ChunkSize < minChunkSize || vm.ChunkSize > maxChunkSize {
		return fmt.Errorf("volume %q: chunk size %d out of range", vm.VolumeID, vm.ChunkSize)
	}
	if n := (vm.Size + int64(vm.ChunkSize) - 1) / int64(vm.ChunkSize); int64(len(vm.Chunks)) != n {
		return fmt.Errorf("volume %q: %d chunks listed, %d bytes need %d", vm.VolumeID, len(vm.Chunks), vm.Size, n)
	}
	return nil
}

// decodeSnapshotJSON parses the (decrypted, decompressed) snapshot JSON.
func decodeSnapshotJSON(b []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	for i := range s.Volumes {
		if err := s.Volumes[i].check(); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
	}
	return &s, nil
}

// Consolidated index file plaintext (index/<name>, written by GC; the name
// is 16 random hex digits, then the number of packs and of entries as 8 hex
// digits each, so that a reader can size its memory before reading):
//
//	magic "CSBSIX2\n" | generation u64 | n u32 | n × superseded file name (16)
//	| packs u32 | packs × (pack id (16) | tombstone i64 | count u32 | count × entry)
//
// entry is as in a pack index. tombstone is 0 for a live pack, -1 for a
// pack this file marks deleted (at the file's ModTime), else the Unix ns
// time (storage clock) an earlier file marked it. The file replaces the
// files it names: their packs that it does not list are gone.
const (
	index2Magic   = "CSBSIX2\n"
	maxIndexFile  = 256 << 20 // bytes of a stored index file
	maxIndexPacks = 1 << 16   // packs in one consolidated file
)

func encodeIndex2(gen uint64, supersedes []string, packs []parsedPack) ([]byte, error) {
	n := 8 + 8 + 4 + 16*len(supersedes) + 4
	for i := range packs {
		n += 16 + 8 + 4 + entryLen*packs[i].count()
	}
	b := make([]byte, 0, n)
	b = append(b, index2Magic...)
	b = binary.LittleEndian.AppendUint64(b, gen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(supersedes)))
	for _, s := range supersedes {
		id, err := parsePackID(s) // index file names are 32 hex digits too
		if err != nil {
			return nil, err
		}
		b = append(b, id[:]...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(packs)))
	for i := range packs {
		p := &packs[i]
		b = append(b, p.id[:]...)
		b = binary.LittleEndian.AppendUint64(b, uint64(p.tomb))
		b = binary.LittleEndian.AppendUint32(b, uint32(p.count()))
		p.each(func(e packEntry) {
			b = append(b, e.ID[:]...)
			b = binary.LittleEndian.AppendUint32(b, e.Offset)
			b = binary.LittleEndian.AppendUint32(b, e.Length)
			b = binary.LittleEndian.AppendUint32(b, e.RawLen)
			b = append(b, e.Flags)
		})
	}
	return b, nil
}

// decodeIndex2 parses a consolidated index plaintext with the checks of
// decodePackIndex for every pack.
func decodeIndex2(b []byte) (gen uint64, supersedes []string, packs []parsedPack, err error) {
	if len(b) < 8+8+4 || string(b[:8]) != index2Magic {
		return 0, nil, nil, errors.New("index: bad header")
	}
	gen = binary.LittleEndian.Uint64(b[8:])
	ns := binary.LittleEndian.Uint32(b[16:])
	rest := b[20:]
	if uint64(ns)*16+4 > uint64(len(rest)) {
		return 0, nil, nil, fmt.Errorf("index: %d superseded files announced, %d bytes present", ns, len(rest))
	}
	supersedes = make([]string, ns)
	for i := range supersedes {
		supersedes[i] = hex.EncodeToString(rest[:16])
		rest = rest[16:]
	}
	np := binary.LittleEndian.Uint32(rest)
	rest = rest[4:]
	if np > maxIndexPacks || uint64(np)*(16+8+4) > uint64(len(rest)) {
		return 0, nil, nil, fmt.Errorf("index: %d packs announced, %d bytes present", np, len(rest))
	}
	packs = make([]parsedPack, np)
	seen := make(map[packID]bool, np)
	for i := range packs {
		if len(rest) < 16+8+4 {
			return 0, nil, nil, fmt.Errorf("index: pack %d: truncated", i)
		}
		p := &packs[i]
		copy(p.id[:], rest)
		if seen[p.id] {
			return 0, nil, nil, fmt.Errorf("index: pack %v listed twice", p.id)
		}
		seen[p.id] = true
		p.tomb = int64(binary.LittleEndian.Uint64(rest[16:]))
		if p.tomb < -1 {
			return 0, nil, nil, fmt.Errorf("index: pack %v: bad tombstone %d", p.id, p.tomb)
		}
		n := binary.LittleEndian.Uint32(rest[24:])
		rest = rest[28:]
		if uint64(n)*entryLen > uint64(len(rest)) {
			return 0, nil, nil, fmt.Errorf("index: pack %v: %d entries announced, %d bytes present", p.id, n, len(rest))
		}
		// Checked now; decoded again when applied (no copy held meanwhile).
		p.raw = rest[:int(n)*entryLen]
		if err := checkEntries(p.raw, nil); err != nil {
			return 0, nil, nil, fmt.Errorf("index: pack %v: %w", p.id, err)
		}
		rest = rest[int(n)*entryLen:]
	}
	if len(rest) != 0 {
		return 0, nil, nil, fmt.Errorf("index: %d bytes after the last pack", len(rest))
	}
	return gen, supersedes, packs, nil
}

// index2Name returns a new name for a consolidated index file of packs
// packs and entries entries.
func index2Name(packs, entries int) string {
	return newID()[:16] + fmt.Sprintf("%08x%08x", uint32(packs), uint32(entries))
}

// indexFileCounts estimates the packs and entries an index file holds from
// its name and size, to size memory before reading it (never trusted
// beyond that): a consolidated file names them; a pack index holds one pack
// and as many entries as its size allows.
func indexFileCounts(name string, size int64) (packs, entries int64) {
	if len(name) == 32 {
		p, perr := strconv.ParseUint(name[16:24], 16, 32)
		e, eerr := strconv.ParseUint(name[24:], 16, 32)
		if perr == nil && eerr == nil && int64(p)*(16+8+4)+int64(e)*entryLen <= size {
			return int64(p), int64(e)
		}
	}
	return 1, max(0, (size-sealOverhead-indexHeaderLen)/entryLen)
}
