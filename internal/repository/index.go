package repository

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"
)

// location is where a durable chunk lives, as the rest of the package sees
// it.
type location struct {
	pack   uint32 // number in index.packs
	offset uint32
	length uint32
	rawLen uint32
	flags  uint8
}

// entry is a location with its chunk id as the index keeps it: 44 bytes,
// in sorted slices (no map overhead, no per-entry pointer). The plaintext
// length is implied: a raw chunk's is its length less the sealing
// overhead, a compressed one's the chunk size, except for the few shorter
// chunks (the last of a volume), kept in index.partial.
type entry struct {
	id     ChunkID
	pack   uint32
	offset uint32
	length uint32 // compressedBit, partialBit and s2Bit on top
}

const (
	compressedBit = 1 << 31 // zstd, or S2 with s2Bit
	partialBit    = 1 << 30 // compressed, and shorter than a chunk: raw length in x.partial
	s2Bit         = 1 << 29
	lengthMask    = s2Bit - 1 // blobs are at most maxChunkSize plus a little
)

// makeEntryLocked returns e as an entry of pack pn.
func (x *index) makeEntryLocked(pn uint32, e packEntry) entry {
	l := e.Length
	if e.Flags != flagRaw {
		l |= compressedBit
		if e.Flags == flagS2 {
			l |= s2Bit
		}
		if e.RawLen != x.chunkSize {
			l |= partialBit
			x.partial[e.ID] = e.RawLen
		}
	}
	return entry{id: e.ID, pack: pn, offset: e.Offset, length: l}
}

// locLocked returns where e is.
func (x *index) locLocked(e *entry) location {
	l := location{pack: e.pack, offset: e.offset, length: e.length & lengthMask}
	if e.length&compressedBit == 0 {
		l.rawLen = l.length - sealOverhead
		return l
	}
	l.rawLen, l.flags = x.chunkSize, flagZstd
	if e.length&partialBit != 0 {
		l.rawLen = x.partial[e.id]
	}
	if e.length&s2Bit != 0 {
		l.flags = flagS2
	}
	return l
}

func (x *index) packEntryLocked(e *entry) packEntry {
	l := x.locLocked(e)
	return packEntry{ID: e.id, Offset: l.offset, Length: l.length, RawLen: l.rawLen, Flags: l.flags}
}

// chunkState is what the index knows about a chunk id.
type chunkState int

const (
	absent  chunkState = iota
	durable            // in a live pack whose pack file and index file are on storage
	pending            // claimed by a backup; being stored or in a pack not yet durable
)

// packState is what the index knows about one pack.
type packState struct {
	id   packID
	file int32  // number in index.files of the index file listing the pack
	tomb int64  // storage time (Unix ns) GC marked the pack deleted; 0 while live
	gone bool   // deleted (or superseded without it): its entries are skipped
	n    int32  // entries
	born uint32 // index.epoch when this process wrote the pack (file < 0)
}

func (p *packState) live() bool { return !p.gone && p.tomb == 0 }

// indexFile is an index file the index has applied.
type indexFile struct {
	name       string
	gen        uint64
	mtime      time.Time
	v1         bool // one pack, named after it (written by a backup)
	damaged    bool // could not be read; contributes nothing
	superseded bool
	packs      []uint32
}

// index maps chunk ids to packs: the durable chunks of the index files
// applied and of the packs written since, and the pending chunks of running
// backups.
//
// Durable chunks live in sorted (a slice sorted by id; a chunk stored in
// several packs has several adjacent entries) and, until the next merge,
// in recent. A chunk in a tombstoned pack is not durable for deduplication
// (a backup stores it again) but can still be read (restore, repack) until
// its pack is gone.
//
// A pending chunk counts as present for deduplication, so two backups never
// store the same chunk twice; a Commit that references a pending chunk waits
// (waitDurable) until its pack and index are on storage.
type index struct {
	mu      sync.Mutex
	cond    sync.Cond // broadcast when pending chunks become durable or are dropped
	packs   []packState
	packNum map[packID]uint32
	sorted  []entry
	recent  map[ChunkID]location
	pending map[ChunkID]*openPack // nil: claimed, not yet in a pack
	lostErr error                 // why the most recently dropped pending chunks were lost

	files      []indexFile
	fileNum    map[string]int32
	superseded map[string]bool // index files superseded by an applied one
	maxGen     uint64
	epoch      uint32 // refresh listings begun

	chunkSize uint32
	partial   map[ChunkID]uint32 // plaintext length of compressed chunks shorter than chunkSize

	// Quarantined copies (quarantine.go): never used to deduplicate,
	// restore or repack, and not counted as a reference by GC.
	quar      map[quarKey]ChunkID
	quarChunk map[ChunkID]int // copies of each chunk id in quar
	quarSeen  map[string]bool // quarantine records applied (or unreadable)
}

// reserve makes room for n more packs (the first load of a large index
// would otherwise grow the pack table and map by doubling).
func (x *index) reserve(n int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.packs = slices.Grow(x.packs, n)
	if len(x.packNum) == 0 && n > 1024 {
		x.packNum = make(map[packID]uint32, n)
	}
}

// beginListing starts a refresh's listing and returns its epoch.
func (x *index) beginListing() uint32 {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.epoch++
	return x.epoch
}

func newIndex(chunkSize int) *index {
	x := &index{
		chunkSize:  uint32(chunkSize),
		partial:    make(map[ChunkID]uint32),
		packNum:    make(map[packID]uint32),
		recent:     make(map[ChunkID]location),
		pending:    make(map[ChunkID]*openPack),
		fileNum:    make(map[string]int32),
		superseded: make(map[string]bool),
		quar:       make(map[quarKey]ChunkID),
		quarChunk:  make(map[ChunkID]int),
		quarSeen:   make(map[string]bool),
	}
	x.cond.L = &x.mu
	return x
}

// seen reports whether index file name, listed with mtime, was applied or
// is superseded. An applied file listed with a later date takes it, and so
// do the tombstones it dated: GC saves a file with new tombstones twice
// (saveIndex2) because the first save's date may precede its visibility,
// and a process that applied the file in between must not keep that date
// (as a GC it would remove the packs early, and write the date on).
func (x *index) seen(name string, mtime time.Time) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	fn, ok := x.fileNum[name]
	if ok {
		if f := &x.files[fn]; mtime.After(f.mtime) && !f.damaged {
			old := f.mtime.UnixNano()
			for _, pn := range f.packs {
				if p := &x.packs[pn]; p.file == fn && p.tomb == old {
					p.tomb = mtime.UnixNano()
				}
			}
			f.mtime = mtime
		}
	}
	return ok || x.superseded[name]
}

func (x *index) addFileLocked(f indexFile) int32 {
	if n, ok := x.fileNum[f.name]; ok {
		return n
	}
	n := int32(len(x.files))
	x.files = append(x.files, f)
	x.fileNum[f.name] = n
	x.maxGen = max(x.maxGen, f.gen)
	return n
}

// newPackLocked adds pack id, listed by file fn.
func (x *index) newPackLocked(id packID, fn int32, tomb int64, n int) uint32 {
	pn := uint32(len(x.packs))
	x.packs = append(x.packs, packState{id: id, file: fn, tomb: tomb, n: int32(n)})
	x.packNum[id] = pn
	if fn >= 0 {
		x.files[fn].packs = append(x.files[fn].packs, pn)
	}
	return pn
}

// parsedFile is an index file read from storage.
type parsedFile struct {
	name       string
	mtime      time.Time
	v1         bool
	gen        uint64
	supersedes []string
	packs      []parsedPack
	damaged    bool // unreadable: remembered as seen, contributes nothing
	size       int64
}

type parsedPack struct {
	id      packID
	tomb    int64       // 0 live, -1 tombstoned at the file's ModTime, else Unix ns
	entries []packEntry // decoded entries, or:
	raw     []byte      // entries as stored (checked by the decoder)
}

// count returns the number of entries.
func (p *parsedPack) count() int {
	if p.raw != nil {
		return len(p.raw) / entryLen
	}
	return len(p.entries)
}

// each calls fn with every entry in order.
func (p *parsedPack) each(fn func(e packEntry)) {
	if p.raw != nil {
		for i := 0; i < len(p.raw); i += entryLen {
			fn(decodeEntry(p.raw[i:]))
		}
		return
	}
	for _, e := range p.entries {
		fn(e)
	}
}

// apply adds index files read from storage. Files may come in any order:
// a file supersedes only files of lower generations, a superseded file is
// skipped if it comes later, and the packs it listed are gone if it came
// first.
func (x *index) apply(files []parsedFile) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var batch []entry
	for _, f := range files {
		x.applyLocked(f, &batch)
	}
	x.mergeLocked(batch)
}

// applyLocked applies one file; the entries of packs new to the index are
// appended to batch, for mergeLocked.
func (x *index) applyLocked(f parsedFile, batch *[]entry) {
	if _, ok := x.fileNum[f.name]; ok || x.superseded[f.name] {
		return
	}
	fn := x.addFileLocked(indexFile{name: f.name, gen: f.gen, mtime: f.mtime, v1: f.v1, damaged: f.damaged})
	if f.damaged {
		return
	}
	in := make(map[uint32]bool, len(f.packs))
	for i := range f.packs {
		p := &f.packs[i]
		tomb := p.tomb
		if tomb == -1 {
			tomb = f.mtime.UnixNano()
		}
		pn, known := x.packNum[p.id]
		if !known {
			pn = x.newPackLocked(p.id, fn, tomb, p.count())
			in[pn] = true
			p.each(func(e packEntry) { *batch = append(*batch, x.makeEntryLocked(pn, e)) })
			continue
		}
		ps := &x.packs[pn]
		if f.v1 {
			// Written by this process (packDone); the pack state stands.
			if ps.file < 0 {
				ps.file = fn
				x.files[fn].packs = append(x.files[fn].packs, pn)
			}
			continue
		}
		if ps.gone {
			// Re-indexed by GC (a snapshot needs it after all).
			ps.gone = false
			p.each(func(e packEntry) { *batch = append(*batch, x.makeEntryLocked(pn, e)) })
		}
		ps.tomb = tomb
		ps.file = fn
		x.files[fn].packs = append(x.files[fn].packs, pn)
		in[pn] = true
	}
	for _, s := range f.supersedes {
		x.superseded[s] = true
		sn, ok := x.fileNum[s]
		if !ok {
			continue
		}
		x.files[sn].superseded = true
		for _, pn := range x.files[sn].packs {
			if x.packs[pn].file == sn && !in[pn] {
				x.packs[pn].gone = true
			}
		}
		x.files[sn].packs = nil
	}
}

// dropMissing settles the files storage no longer lists (listed holds
// every index file name it listed before the files were applied). A file
// disappears only after GC wrote the files that supersede it, and those
// were listed and applied too: so the packs a missing file still holds are
// packs the superseding files left out, which are gone. (The superseding
// file may name only an intermediate file this process never saw.) What
// the index remembers of superseded files that are gone is dropped.
//
// A pack this process wrote whose own index file (index/<pack id>) was not
// listed although it was saved before the listing began was consolidated
// the same way.
func (x *index) dropMissing(listed map[string]bool, epoch uint32) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for pn := range x.packs {
		p := &x.packs[pn]
		if p.file < 0 && !p.gone && p.born < epoch && !listed[p.id.String()] {
			p.gone = true
		}
	}
	for name, fn := range x.fileNum {
		if listed[name] {
			continue
		}
		f := &x.files[fn]
		for _, pn := range f.packs {
			if x.packs[pn].file == fn {
				x.packs[pn].gone = true
			}
		}
		delete(x.fileNum, name)
		x.superseded[name] = true
		*f = indexFile{superseded: true}
	}
	for name := range x.superseded {
		if !listed[name] {
			delete(x.superseded, name)
		}
	}
}

// unexplained reports whether listed lacks an index file that the index
// holds packs of and knows no superseding file for (or the own index file
// of a pack this process wrote before the listing began). A listing is not
// a snapshot of storage: one that runs while a GC writes a consolidated
// file and then removes the files it supersedes can miss both, and
// dropping the packs then would forget packs that are still there (and GC
// would write its next index without them). refresh lists again instead.
func (x *index) unexplained(listed map[string]bool, epoch uint32) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	for pn := range x.packs {
		p := &x.packs[pn]
		if p.file < 0 && !p.gone && p.born < epoch && !listed[p.id.String()] {
			return true
		}
	}
	for name, fn := range x.fileNum {
		if listed[name] || x.files[fn].superseded {
			continue
		}
		for _, pn := range x.files[fn].packs {
			if p := &x.packs[pn]; p.file == fn && !p.gone {
				return true
			}
		}
	}
	return false
}

// mergeLocked merges batch and recent into sorted, dropping entries of gone
// packs.
func (x *index) mergeLocked(batch []entry) {
	for id, loc := range x.recent {
		batch = append(batch, x.makeEntryLocked(loc.pack, packEntry{ID: id, Offset: loc.offset, Length: loc.length, RawLen: loc.rawLen, Flags: loc.flags}))
	}
	clear(x.recent)
	if len(batch) == 0 {
		return
	}
	slices.SortFunc(batch, func(a, b entry) int { return cmpID(&a.id, &b.id) })
	if len(x.sorted) == 0 {
		// The first load: the batch becomes the index, without a copy.
		out := batch[:0]
		for _, e := range batch {
			if !x.packs[e.pack].gone {
				out = append(out, e)
			}
		}
		x.sorted = out
		return
	}
	out := make([]entry, 0, len(x.sorted)+len(batch))
	i, j := 0, 0
	for i < len(x.sorted) || j < len(batch) {
		var e entry
		if j >= len(batch) || i < len(x.sorted) && cmpID(&x.sorted[i].id, &batch[j].id) <= 0 {
			e = x.sorted[i]
			i++
		} else {
			e = batch[j]
			j++
		}
		if !x.packs[e.pack].gone {
			out = append(out, e)
		}
	}
	x.sorted = slices.Clip(out)
}

func cmpID(a, b *ChunkID) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// compact merges recent into sorted (GC iterates sorted only).
func (x *index) compact() {
	x.mu.Lock()
	x.mergeLocked(nil)
	x.mu.Unlock()
}

// copiesLocked yields the location of every copy of id the index holds
// that is not quarantined: recent's first (the newest), then sorted's.
func (x *index) copiesLocked(id ChunkID) iter.Seq[location] {
	return func(yield func(location) bool) {
		if loc, ok := x.recent[id]; ok && !x.badLocked(loc.pack, loc.offset) && !yield(loc) {
			return
		}
		i, _ := slices.BinarySearchFunc(x.sorted, id, func(e entry, id ChunkID) int { return cmpID(&e.id, &id) })
		for ; i < len(x.sorted) && x.sorted[i].id == id; i++ {
			if e := &x.sorted[i]; !x.badLocked(e.pack, e.offset) && !yield(x.locLocked(e)) {
				return
			}
		}
	}
}

// findLocked returns the best location of id: in a live pack if any, else
// (when readable is set) in a tombstoned pack that is not gone.
func (x *index) findLocked(id ChunkID, readable bool) (location, bool) {
	var fallback location
	found := false
	for loc := range x.copiesLocked(id) {
		p := &x.packs[loc.pack]
		if p.live() {
			return loc, true
		}
		if !p.gone && !found {
			fallback, found = loc, true
		}
	}
	return fallback, found && readable
}

// lookup returns the location of a durable chunk to read it.
func (x *index) lookup(id ChunkID) (location, packID, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	loc, ok := x.findLocked(id, true)
	if !ok {
		return loc, packID{}, false
	}
	return loc, x.packs[loc.pack].id, true
}

// has reports whether id can be read (a committed snapshot may reference
// it).
func (x *index) has(id ChunkID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.findLocked(id, true)
	return ok
}

// protected reports whether an operation whose lease began at since
// (storage time, Unix ns, less GCMargin) may reference id without storing
// it: id is in a live pack, or in a pack marked at or after since, which GC
// keeps while the lease lives. A pack marked earlier goes as soon as no
// committed snapshot GC has listed needs it.
func (x *index) protected(id ChunkID, since int64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.protectedLocked(id, since)
}

func (x *index) protectedLocked(id ChunkID, since int64) bool {
	for loc := range x.copiesLocked(id) {
		if p := &x.packs[loc.pack]; !p.gone && (p.tomb == 0 || p.tomb >= since) {
			return true
		}
	}
	return false
}

// claim returns the state of id; when absent, it marks id pending (claimed
// by the caller, who must then either add it to a pack or unclaim it). A
// chunk only in tombstoned packs is absent: GC is deleting it.
func (x *index) claim(id ChunkID) chunkState {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.findLocked(id, false); ok {
		return durable
	}
	if _, ok := x.pending[id]; ok {
		return pending
	}
	x.pending[id] = nil
	return absent
}

// unclaim drops a claim whose chunk will not be stored.
func (x *index) unclaim(id ChunkID, why error) {
	x.mu.Lock()
	if p, ok := x.pending[id]; ok && p == nil {
		delete(x.pending, id)
		x.lostErr = why
	}
	x.mu.Unlock()
	x.cond.Broadcast()
}

// packDone makes the entries of p durable (err == nil): its index file
// index/<pack id> is on storage. Or it drops them (err != nil): backups that
// referenced them fail at Commit.
func (x *index) packDone(p *openPack, err error) {
	x.mu.Lock()
	var pn uint32
	if err == nil {
		// The pack's index file is on storage; the next refresh reads it
		// (a few bytes) and assigns the pack to it.
		if known, ok := x.packNum[p.id]; ok {
			pn = known
		} else {
			pn = x.newPackLocked(p.id, -1, 0, len(p.entries))
			x.packs[pn].born = x.epoch
		}
	} else {
		x.lostErr = err
	}
	for _, e := range p.entries {
		if x.pending[e.ID] == p {
			delete(x.pending, e.ID)
		}
		if err == nil {
			// Overwrites the old location when GC repacks a live chunk.
			x.recent[e.ID] = location{pack: pn, offset: e.Offset, length: e.Length, rawLen: e.RawLen, flags: e.Flags}
		}
	}
	if len(x.recent) > max(1<<14, len(x.sorted)/8) {
		x.mergeLocked(nil)
	}
	x.mu.Unlock()
	x.cond.Broadcast()
}

// waitDurable returns when every chunk of ids is durable: in a live pack,
// or in a pack marked at or after since (see protected). Chunks in the open
// pack make it rotate (rotate is called without x.mu held). It fails when a
// chunk is neither durable nor pending: the backup storing it failed.
func (x *index) waitDurable(ctx context.Context, ids []ChunkID, since int64, rotate func(*openPack)) error {
	stop := context.AfterFunc(ctx, func() {
		x.mu.Lock()
		x.cond.Broadcast()
		x.mu.Unlock()
	})
	defer stop()
	rotated := make(map[*openPack]bool)
	x.mu.Lock()
	defer x.mu.Unlock()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var toRotate []*openPack
		waiting := false
		for _, id := range ids {
			if _, ok := x.findLocked(id, false); ok {
				continue
			}
			// A copy in a marked pack does not end the wait: the backup
			// stored the chunk because the pack was marked before it
			// began, and nothing keeps GC from removing such a pack
			// before it lists the snapshot (TestRaceCommitOfChunkInMarkedPack).
			p, ok := x.pending[id]
			if !ok && x.protectedLocked(id, since) {
				continue
			}
			if !ok {
				why := x.lostErr
				if why == nil {
					why = errors.New("its pack was not written")
				}
				return fmt.Errorf("chunk %v was not stored (%w); run the backup again", id, why)
			}
			waiting = true
			if p != nil && !rotated[p] {
				rotated[p] = true
				toRotate = append(toRotate, p)
			}
		}
		if !waiting {
			return nil
		}
		if len(toRotate) > 0 {
			x.mu.Unlock()
			for _, p := range toRotate {
				rotate(p)
			}
			x.mu.Lock()
			continue
		}
		x.cond.Wait()
	}
}

// knows reports whether pack id is in the index and not gone.
func (x *index) knows(id packID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	pn, ok := x.packNum[id]
	return ok && !x.packs[pn].gone
}

// entriesByPack returns the entries of every live pack, in pack order, and
// the ids of the packs marked deleted.
func (x *index) entriesByPack() (map[packID][]packEntry, map[packID]bool) {
	x.compact()
	x.mu.Lock()
	defer x.mu.Unlock()
	m := make(map[packID][]packEntry)
	marked := make(map[packID]bool)
	for i := range x.packs {
		if p := &x.packs[i]; !p.gone && p.tomb != 0 {
			marked[p.id] = true
		}
	}
	for i := range x.sorted {
		e := &x.sorted[i]
		p := &x.packs[e.pack]
		if p.live() {
			m[p.id] = append(m[p.id], x.packEntryLocked(e))
		}
	}
	for _, es := range m {
		slices.SortFunc(es, func(a, b packEntry) int { return int(a.Offset) - int(b.Offset) })
	}
	return m, marked
}

// damagedFiles returns the names of index files that could not be read.
func (x *index) damagedFiles() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	for i := range x.files {
		if x.files[i].damaged && !x.files[i].superseded {
			out = append(out, x.files[i].name)
		}
	}
	return out
}

// stats returns the number of packs not gone, of chunk entries, and the
// bytes the index holds per entry (for benchmarks).
func (x *index) stats() (packs, entries int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := range x.packs {
		if !x.packs[i].gone {
			packs++
		}
	}
	return packs, len(x.sorted) + len(x.recent)
}

// compactPacks renumbers the packs without the gone ones, when at least
// min are gone, so that a long-running process does not keep the state of
// every pack it ever saw. It returns how many it dropped. Pack numbers
// change: the caller holds Repository.refreshMu (no refresh holds numbers
// meanwhile) and GC's lock (no GC plan holds them).
func (x *index) compactPacks(min int) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	gone := 0
	for i := range x.packs {
		if x.packs[i].gone {
			gone++
		}
	}
	if gone == 0 || gone < min {
		return 0
	}
	x.mergeLocked(nil) // recent is empty afterwards
	const none = ^uint32(0)
	remap := make([]uint32, len(x.packs))
	packs := make([]packState, 0, len(x.packs)-gone)
	for i, p := range x.packs {
		if p.gone {
			remap[i] = none
			if x.packNum[p.id] == uint32(i) {
				delete(x.packNum, p.id)
			}
			continue
		}
		remap[i] = uint32(len(packs))
		x.packNum[p.id] = remap[i]
		packs = append(packs, p)
	}
	x.packs = packs
	out := x.sorted[:0]
	for _, e := range x.sorted {
		if n := remap[e.pack]; n != none {
			e.pack = n
			out = append(out, e)
		}
	}
	x.sorted = out
	for fn := range x.files {
		ps := x.files[fn].packs[:0]
		for _, pn := range x.files[fn].packs {
			if n := remap[pn]; n != none {
				ps = append(ps, n)
			}
		}
		x.files[fn].packs = ps
	}
	return gone
}
