package repository

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
)

// GCStats says what GC did.
type GCStats struct {
	PacksDeleted   int   // packs removed from storage
	PacksMarked    int   // packs newly marked deleted (tombstoned); a later run removes them
	PacksRewritten int   // packs whose live chunks were copied to new packs; marked deleted like the others
	PacksPending   int   // packs that wait: marked deleted before operations still running began, or unreferenced but too young to mark
	BytesFreed     int64 // net bytes removed from storage
	PacksDamaged   int   // packs moved to damaged/ instead of removed: unreadable, or holding quarantined copies
	Quarantined    int   // damaged chunk copies GC found (copying or checking them) and quarantined
}

// repackThreshold: a pack whose unreferenced bytes exceed this share of its
// size is rewritten.
const repackThreshold = 0.25

// staleTemp is how old a temporary file must be before GC removes it.
const staleTemp = time.Hour

// compactGone is how many removed packs the memory index keeps before GC
// renumbers the packs without them.
var compactGone = 1024

// A consolidated index file holds whole source files up to 4096 packs or
// 2^20 chunks (45 MiB; small chunks in big packs), so it stays well under
// maxIndexFile. Files with under an eighth of either are merged again.
const (
	indexFilePacks   = 4096
	indexFileEntries = 1 << 20
)

// GC removes chunks no snapshot references, in two phases, while backups,
// restores and verifies go on (see the package doc):
//
//  1. It marks the packs no committed snapshot references as deleted
//     (tombstones in a consolidated index file). From then on backups do not
//     deduplicate against their chunks. Packs with more than 25%
//     unreferenced bytes are rewritten: their live chunks are copied to new
//     packs, then the old pack is marked.
//  2. It removes the packs marked before the oldest operation still running
//     began (minus Options.GCMargin), unless a snapshot committed since
//     references them, in which case the mark is lifted.
//
// Packs without an index file are re-indexed from their trailer if a
// snapshot needs them, else removed once older than that same limit. GC
// consolidates index files (many packs per file) as it goes. It refuses to
// run if a snapshot cannot be read, since the chunks of that snapshot would
// be lost, and returns ErrBusy while another GC runs on the repository.
//
// When the margin is two seconds or less, GC does both phases in one call;
// otherwise the packs it marks are removed by a later call (PacksPending
// says how many wait).
func (r *Repository) GC(ctx context.Context) (total GCStats, err error) {
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	before, err := r.Size(ctx)
	if err != nil {
		return total, fmt.Errorf("gc: %w", err)
	}
	defer func() {
		if after, err := r.Size(context.WithoutCancel(ctx)); err == nil {
			total.BytesFreed = max(0, before-after)
		}
	}()
	for pass := 0; ; pass++ {
		st, marked, err := r.gcPass(ctx)
		total.PacksDeleted += st.PacksDeleted
		total.PacksMarked += st.PacksMarked
		total.PacksRewritten += st.PacksRewritten
		total.PacksPending = st.PacksPending
		total.PacksDamaged += st.PacksDamaged
		total.Quarantined += st.Quarantined
		if err != nil {
			return total, fmt.Errorf("gc: %w", err)
		}
		if pass > 0 || st.PacksMarked == 0 || r.opts.GCMargin > 2*time.Second {
			break
		}
		// Wait until storage's clock is past the marks plus the margin
		// (storage times have a granularity: a clock tick, a second on S3).
		deadline := time.Now().Add(2*r.opts.GCMargin + 3*time.Second)
		for time.Now().Before(deadline) {
			time.Sleep(max(r.opts.GCMargin/4, 20*time.Millisecond))
			now, err := r.storageNow(ctx)
			if err != nil {
				return total, fmt.Errorf("gc: %w", err)
			}
			if now.Add(-r.opts.GCMargin).After(marked) {
				break
			}
		}
	}
	if tr, ok := r.be.(interface {
		RemoveStaleTemp(context.Context, time.Duration) (int64, error)
	}); ok {
		if _, err := tr.RemoveStaleTemp(ctx, staleTemp); err != nil {
			return total, fmt.Errorf("gc: %w", err)
		}
	}
	return total, nil
}

// GCMargin returns Options.GCMargin: how long after GC marks a pack deleted
// another GC may remove it at the earliest.
func (r *Repository) GCMargin() time.Duration { return r.opts.GCMargin }

// packFate is what a GC pass does with a pack.
type packFate uint8

const (
	keep    packFate = iota
	mark             // tombstone now
	revive           // lift the tombstone: a snapshot references it
	remove           // tombstoned before the barrier and unreferenced
	vanish           // indexed but not on storage: forget it
	rewrite          // copy live chunks, then tombstone
)

// gcPass runs both phases once. marked is the storage time of the newest
// mark it wrote.
func (r *Repository) gcPass(ctx context.Context) (st GCStats, marked time.Time, err error) {
	gl, err := r.acquireLease(ctx, leaseGC)
	if err != nil {
		return st, marked, err
	}
	defer gl.release()
	now := gl.start
	live, dead, err := r.readLeases(ctx, now)
	if err != nil {
		return st, marked, err
	}
	// barrier: anything marked deleted before it is invisible to every
	// running operation (they all began later and refreshed their index).
	barrier, err := r.barrier(gl, live)
	if err != nil {
		return st, marked, err
	}
	for _, name := range dead {
		_ = r.be.Remove(ctx, blob.Handle{Type: blob.LeaseFile, Name: name})
	}
	// Make this process's pending chunks durable. An error here (a pack an
	// earlier operation failed to write, on a full disk say) is reported
	// once: this pass stops, and the next one runs (the service retries a
	// failed GC soon, since it is what frees the space).
	if err := r.packer.flush(); err != nil {
		return st, marked, err
	}
	if err := r.refresh(ctx); err != nil {
		return st, marked, err
	}
	r.refreshMu.Lock()
	r.idx.compactPacks(compactGone)
	r.refreshMu.Unlock()
	// Everything a committed snapshot references. Snapshots are listed
	// after the leases were read: a backup that ended before then has its
	// snapshot listed; one running then is behind the barrier.
	used, err := r.usedChunks(ctx)
	if err != nil {
		return st, marked, err
	}
	packs := make(map[string]blob.FileInfo)
	err = r.be.List(ctx, blob.PackFile, func(fi blob.FileInfo) error {
		packs[fi.Name] = fi
		return nil
	})
	if err != nil {
		return st, marked, fmt.Errorf("list packs: %w", err)
	}

	// Packs without index: a crash between a pack and its index file, a
	// GC that removed the index before the pack, or a damaged index.
	var reindexed []parsedPack
	for name, fi := range packs {
		id, err := parsePackID(name)
		if err != nil || r.idx.knows(id) || !fi.ModTime.Before(barrier) {
			continue // a young pack's index may be on its way
		}
		entries, terr := r.readTrailer(ctx, name, fi.Size)
		if errors.Is(terr, fs.ErrNotExist) {
			delete(packs, name) // removed meanwhile (by a GC that took this one's lease for stale)
			continue
		}
		if terr != nil && !isDamage(terr) {
			return st, marked, terr
		}
		if terr != nil {
			// Neither its index file nor its trailer can be read: what
			// it holds is unknown, so it is kept, out of the way.
			if err := gl.valid(); err != nil {
				return st, marked, err
			}
			if err := r.moveToDamaged(ctx, id); err != nil {
				return st, marked, err
			}
			delete(packs, name)
			st.PacksDamaged++
			continue
		}
		needed := false
		for _, e := range entries {
			if _, ok := used[e.ID]; ok && !r.idx.has(e.ID) {
				needed = true
			}
		}
		if needed {
			reindexed = append(reindexed, parsedPack{id: id, entries: entries})
			continue
		}
		if err := gl.valid(); err != nil {
			return st, marked, err
		}
		if err := r.be.Remove(ctx, packHandle(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return st, marked, err
		}
		delete(packs, name)
		st.PacksDeleted++
	}

	fates, copies, checks, young := r.idx.gcPlan(used, packs, barrier.UnixNano())
	// Before a copy of a chunk goes, the copy that stays must be intact: a
	// damaged one is quarantined and an intact one taken from the packs
	// about to go.
	more, err := r.checkKept(ctx, checks)
	if err != nil {
		return st, marked, err
	}
	st.Quarantined += len(more)
	copies = append(copies, more...)
	for _, f := range fates {
		switch f {
		case mark:
			st.PacksMarked++
		case rewrite:
			st.PacksRewritten++
			st.PacksMarked++
		}
	}
	if len(copies) > 0 {
		q, err := r.repack(ctx, copies)
		st.Quarantined += q
		if err != nil {
			return st, marked, err
		}
		if err := r.packer.flush(); err != nil {
			return st, marked, fmt.Errorf("repack: %w", err)
		}
		// The copies' index files are on storage (and in the index)
		// before the originals are marked.
	}
	superseded, marked, err := r.writeIndex(ctx, fates, reindexed, false)
	if err != nil {
		return st, marked, err
	}
	// A GC paused for longer than its lease lives (another GC may have
	// started meanwhile) removes nothing: the next run decides again.
	if err := gl.valid(); err != nil {
		return st, marked, err
	}
	for pn, f := range fates {
		if f == remove {
			id := r.idx.packID(pn)
			if len(r.idx.quarantinedIn(id)) > 0 {
				// It holds damaged copies: kept for inspection.
				if err := r.moveToDamaged(ctx, id); err != nil {
					return st, marked, err
				}
				st.PacksDamaged++
				continue
			}
			if err := r.be.Remove(ctx, packHandle(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return st, marked, err
			}
			st.PacksDeleted++
		}
	}
	for _, name := range superseded {
		if err := r.be.Remove(ctx, blob.Handle{Type: blob.IndexFile, Name: name}); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return st, marked, err
		}
	}
	st.PacksPending = r.idx.tombstoned() + young
	return st, marked, nil
}

// usedChunks returns every chunk a committed snapshot references. It reads
// the snapshots in parallel (on an object store each is a request).
func (r *Repository) usedChunks(ctx context.Context) (map[ChunkID]struct{}, error) {
	ids, err := r.snapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	used := make(map[ChunkID]struct{})
	var mu sync.Mutex
	var firstErr error
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(2*r.opts.Workers, max(len(ids), 1)) {
		wg.Go(func() {
			for id := range work {
				s, err := r.LoadSnapshot(ctx, id)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("refusing to delete data while snapshot %s cannot be read (delete it or restore the file): %w", id, err)
					}
				} else {
					for _, vm := range s.Volumes {
						for _, c := range vm.Chunks {
							if !c.IsZero() {
								used[c] = struct{}{}
							}
						}
					}
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return used, nil
}

// gcPlan decides the fate of every pack (by pack number) and returns the
// entries of live chunks to copy out of packs to rewrite.
//
// A referenced chunk keeps every live pack holding it; only when no live
// pack holds it (a backup deduplicated against it before the mark reached
// it) does it revive the tombstoned packs that do.
//
// checks lists the referenced chunks of which a copy stays while another
// goes (its pack is marked, removed or rewritten): GC checks the one that
// stays before the others go.
func (x *index) gcPlan(used map[ChunkID]struct{}, onStorage map[string]blob.FileInfo, barrier int64) (fates map[uint32]packFate, copies []copyItem, checks []keptCheck, young int) {
	x.compact()
	x.mu.Lock()
	defer x.mu.Unlock()
	liveBytes := make([]int64, len(x.packs))
	referenced := make([]bool, len(x.packs))
	forRuns := func(fn func(run []entry)) {
		for i := 0; i < len(x.sorted); {
			j := i + 1
			for j < len(x.sorted) && x.sorted[j].id == x.sorted[i].id {
				j++
			}
			if _, ok := used[x.sorted[i].id]; ok {
				fn(x.sorted[i:j])
			}
			i = j
		}
	}
	// A quarantined copy is as good as absent: it neither keeps its pack
	// nor is copied, and it never stands in for an intact copy.
	bad := func(e *entry) bool { return x.badLocked(e.pack, e.offset) }
	// Each pack's file on storage, looked up once. A pack missing from
	// storage (lost, or removed while a file that listed it stayed behind)
	// holds no copy: it must not let GC remove the marked copy a
	// referenced chunk still has (TestGCPackMissing).
	files := make([]blob.FileInfo, len(x.packs))
	present := make([]bool, len(x.packs))
	for pn := range x.packs {
		if !x.packs[pn].gone {
			files[pn], present[pn] = onStorage[x.packs[pn].id.String()]
		}
	}
	missing := func(e *entry) bool { return !present[e.pack] }
	forRuns(func(run []entry) {
		anyLive := false
		for k := range run {
			anyLive = anyLive || x.packs[run[k].pack].live() && !bad(&run[k]) && !missing(&run[k])
		}
		for k := range run {
			p := &x.packs[run[k].pack]
			if p.gone || bad(&run[k]) || missing(&run[k]) || anyLive && !p.live() {
				continue
			}
			referenced[run[k].pack] = true
			liveBytes[run[k].pack] += int64(alignUp(int(run[k].length & lengthMask)))
		}
	})
	fates = make(map[uint32]packFate)
	for pn := range x.packs {
		p := &x.packs[pn]
		if p.gone {
			continue
		}
		fi, ok := files[pn], present[pn]
		// A pack made after the oldest running operation began may be
		// one of its packs: it is neither marked nor rewritten yet (it could
		// not be removed before that operation ends anyway).
		old := ok && fi.ModTime.UnixNano() < barrier
		switch {
		case !ok:
			fates[uint32(pn)] = vanish
		case referenced[pn] && p.tomb != 0:
			fates[uint32(pn)] = revive
		case !referenced[pn] && p.tomb == 0 && old:
			fates[uint32(pn)] = mark
		case !referenced[pn] && p.tomb != 0 && p.tomb < barrier:
			fates[uint32(pn)] = remove
		case referenced[pn] && p.tomb == 0 && old && float64(fi.Size-liveBytes[pn]) > repackThreshold*float64(fi.Size):
			fates[uint32(pn)] = rewrite
		case !referenced[pn] && p.tomb == 0:
			young++
		}
	}
	forRuns(func(run []entry) {
		var from, stays *entry
		var going []location
		for k := range run {
			p := &x.packs[run[k].pack]
			if bad(&run[k]) || p.gone || missing(&run[k]) {
				continue
			}
			switch f := fates[run[k].pack]; {
			case p.live() && f != rewrite || f == revive:
				if stays == nil {
					stays = &run[k]
				}
			case f == mark || f == remove || f == rewrite:
				going = append(going, x.locLocked(&run[k]))
				if from == nil && f == rewrite {
					from = &run[k]
				}
			}
		}
		switch {
		case stays != nil && len(going) > 0:
			checks = append(checks, keptCheck{id: stays.id, kept: x.locLocked(stays), keptPack: x.packs[stays.pack].id, alts: going})
		case stays == nil && from != nil:
			copies = append(copies, copyItem{id: from.id, loc: x.locLocked(from)})
		}
	})
	return fates, copies, checks, young
}

// keptCheck is a referenced chunk of which the copy kept (in keptPack)
// must be checked before the copies in alts go.
type keptCheck struct {
	id       ChunkID
	kept     location
	keptPack packID
	alts     []location
}

// checkKept authenticates the copy that stays of every chunk in checks.
// A damaged one is quarantined, and the first alternative is returned to
// be copied (repack authenticates it in turn).
func (r *Repository) checkKept(ctx context.Context, checks []keptCheck) ([]copyItem, error) {
	var out []copyItem
	buf := alignedBuf(alignUp(r.cfg.ChunkSize + sealOverhead))
	for _, c := range checks {
		err := r.authenticate(ctx, c.keptPack, c.id, c.kept, buf)
		if err == nil {
			continue
		}
		if !isDamage(err) {
			return nil, err
		}
		if err := r.quarantine(ctx, []badCopy{{pack: c.keptPack, offset: c.kept.offset, id: c.id}}, "gc: "+err.Error()); err != nil {
			return nil, err
		}
		out = append(out, copyItem{id: c.id, loc: c.alts[0], alts: c.alts[1:]})
	}
	return out, nil
}

// authenticate loads the sealed blob of chunk id at loc in pack and checks
// its GCM tag (the id is its additional data), into buf. Damage comes back
// as a damageError. The plaintext is not re-hashed: GC does not know the
// chunk's dedup domain, and the tag already proves the blob is the one
// sealed for id.
func (r *Repository) authenticate(ctx context.Context, pack packID, id ChunkID, loc location, buf []byte) error {
	if alignUp(int(loc.length)) > len(buf) || loc.length < sealOverhead {
		return damageError{fmt.Errorf("chunk %v in pack %v: length %d out of range", id, pack, loc.length)}
	}
	b := buf[:loc.length]
	if err := loadInto(ctx, r.be, packHandle(pack), b, int64(loc.offset)); err != nil {
		return fmt.Errorf("chunk %v in pack %v: %w", id, pack, err)
	}
	// Decrypted into a scratch copy: b must stay sealed for the copy.
	if _, err := open(r.keys.aead, make([]byte, 0, len(b)), b, id[:]); err != nil {
		return damageError{fmt.Errorf("chunk %v at offset %d of pack %v: %w", id, loc.offset, pack, err)}
	}
	return nil
}

func (x *index) packID(pn uint32) packID {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.packs[pn].id
}

// tombstoned returns the number of packs marked deleted and not yet gone.
func (x *index) tombstoned() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for i := range x.packs {
		if !x.packs[i].gone && x.packs[i].tomb != 0 {
			n++
		}
	}
	return n
}

// writeIndex writes consolidated index files carrying the fates: the files
// listing a pack whose state changes are rewritten, together with every
// pack index file and small consolidated file (which merges them), and the
// re-indexed packs. Packs to remove or vanished are left out, so they are
// gone once the files are applied. It returns the files superseded (to be
// removed once the packs are).
//
// Quarantined copies are left out of every file written; with dropBad the
// files still listing one are rewritten too (repair).
func (r *Repository) writeIndex(ctx context.Context, fates map[uint32]packFate, reindexed []parsedPack, dropBad bool) (superseded []string, newest time.Time, err error) {
	x := r.idx
	x.mu.Lock()
	rewriteFile := make(map[int32]bool)
	if dropBad {
		for k := range x.quar {
			if pn, ok := x.packNum[k.pack]; ok && !x.packs[pn].gone && x.packs[pn].file >= 0 {
				rewriteFile[x.packs[pn].file] = true
			}
		}
	}
	for pn, f := range fates {
		if f != keep {
			if fn := x.packs[pn].file; fn >= 0 {
				rewriteFile[fn] = true
			}
		}
	}
	for fn := range x.files {
		f := &x.files[fn]
		if f.superseded {
			continue
		}
		if f.damaged || len(f.packs) > 0 && (f.v1 || len(f.packs) < indexFilePacks/8 && x.fileEntriesLocked(int32(fn)) < indexFileEntries/8) {
			rewriteFile[int32(fn)] = true
		}
	}
	fns := make([]int32, 0, len(rewriteFile))
	for fn := range rewriteFile {
		if x.files[fn].superseded {
			continue
		}
		fns = append(fns, fn)
	}
	slices.Sort(fns) // older files first: packs stay roughly in the order they were written
	want := make(map[uint32]*parsedPack)
	type group struct {
		names   []string
		packs   []uint32
		entries int
	}
	var groups []group
	var cur group
	for _, fn := range fns {
		f := &x.files[fn]
		cur.names = append(cur.names, f.name)
		for _, pn := range f.packs {
			p := &x.packs[pn]
			if p.file != fn || p.gone {
				continue
			}
			fate := fates[pn]
			if fate == remove || fate == vanish {
				continue
			}
			pp := &parsedPack{id: p.id, tomb: p.tomb}
			switch fate {
			case mark, rewrite:
				pp.tomb = -1
			case revive:
				pp.tomb = 0
			}
			want[pn] = pp
			cur.packs = append(cur.packs, pn)
			cur.entries += int(p.n)
		}
		if len(cur.packs) >= indexFilePacks || cur.entries >= indexFileEntries {
			groups = append(groups, cur)
			cur = group{}
		}
	}
	gen := x.maxGen + 1
	// Files superseded but still on storage (a GC stopped before removing
	// them) are superseded again, and removed with the others: the files
	// that superseded them may go, and a process that then found one
	// without its successor would take its packs for live
	// (TestRaceLeftoverIndexFile).
	var leftovers []string
	for name := range x.superseded {
		leftovers = append(leftovers, name)
	}
	x.mu.Unlock()
	slices.Sort(leftovers)
	if len(cur.names) > 0 || len(reindexed) > 0 {
		groups = append(groups, cur)
	}
	if len(groups) == 0 {
		return nil, newest, nil
	}
	groups[0].names = append(groups[0].names, leftovers...)
	// The entries of the packs to write, from the index.
	for id, es := range x.entriesOf(want) {
		want[id].entries = es
	}
	for gi, g := range groups {
		packs := make([]parsedPack, 0, len(g.packs))
		for _, pn := range g.packs {
			packs = append(packs, *want[pn])
		}
		if gi == len(groups)-1 {
			packs = append(packs, reindexed...)
		}
		mtime, err := r.saveIndex2(ctx, gen, g.names, packs)
		if err != nil {
			return superseded, newest, err
		}
		if mtime.After(newest) {
			newest = mtime
		}
		superseded = append(superseded, g.names...)
	}
	return superseded, newest, nil
}

// fileEntriesLocked returns the chunk entries of the packs file fn lists.
func (x *index) fileEntriesLocked(fn int32) int {
	n := 0
	for _, pn := range x.files[fn].packs {
		if p := &x.packs[pn]; p.file == fn && !p.gone {
			n += int(p.n)
		}
	}
	return n
}

// entriesOf returns the entries of the packs in want, in pack order,
// without the quarantined copies (an index file written from them no
// longer names those).
func (x *index) entriesOf(want map[uint32]*parsedPack) map[uint32][]packEntry {
	x.compact()
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make(map[uint32][]packEntry, len(want))
	for i := range x.sorted {
		e := &x.sorted[i]
		if _, ok := want[e.pack]; ok && !x.badLocked(e.pack, e.offset) {
			out[e.pack] = append(out[e.pack], x.packEntryLocked(e))
		}
	}
	for _, es := range out {
		sort.Slice(es, func(i, j int) bool { return es[i].Offset < es[j].Offset })
	}
	return out
}

// saveIndex2 saves a consolidated index file and applies it to the index.
func (r *Repository) saveIndex2(ctx context.Context, gen uint64, supersedes []string, packs []parsedPack) (time.Time, error) {
	plain, err := encodeIndex2(gen, supersedes, packs)
	if err != nil {
		return time.Time{}, err
	}
	entries := 0
	for i := range packs {
		entries += packs[i].count()
	}
	name := index2Name(len(packs), entries)
	h := blob.Handle{Type: blob.IndexFile, Name: name}
	sealed := seal(r.keys.aead, plain, aadIndex)
	if err := r.be.Save(ctx, h, bytesReader(sealed)); err != nil {
		return time.Time{}, fmt.Errorf("save index: %w", err)
	}
	// New tombstones are dated by the file's ModTime, and every operation
	// that began later must have seen them. Storage may date an object
	// before it became visible (S3 dates a multipart upload by its start; a
	// file is dated when written, before its sync and rename), so a file
	// with new tombstones is saved once more: the second save begins after
	// the first is visible, so the date it leaves is not earlier than that.
	// (A GC killed in between leaves the first date; GCMargin covers that.)
	if slices.ContainsFunc(packs, func(p parsedPack) bool { return p.tomb == -1 }) {
		if err := r.be.Save(ctx, h, bytesReader(sealed)); err != nil {
			return time.Time{}, fmt.Errorf("save index: %w", err)
		}
	}
	fi, err := r.be.Stat(ctx, h)
	if err != nil {
		return time.Time{}, fmt.Errorf("save index: %w", err)
	}
	r.refreshMu.Lock()
	r.idx.apply([]parsedFile{{name: name, mtime: fi.ModTime, gen: gen, supersedes: supersedes, packs: packs}})
	r.refreshMu.Unlock()
	return fi.ModTime, nil
}

// copyItem is a live chunk to copy out of a pack being rewritten (or out
// of a pack about to go, when the copy that stays was found damaged).
type copyItem struct {
	id   ChunkID
	loc  location
	alts []location // other copies, tried in turn when loc is damaged
}

// repack copies the sealed blobs of chunks to the open pack; the index
// points at the copies once they are durable. Every blob is authenticated
// before it is copied: a damaged one is quarantined, never copied (that
// would launder it into a fresh pack), and the next copy is tried; a chunk
// with no intact copy is left where it is (its pack goes to damaged/).
func (r *Repository) repack(ctx context.Context, items []copyItem) (quarantined int, err error) {
	sort.Slice(items, func(i, j int) bool {
		if items[i].loc.pack != items[j].loc.pack {
			return items[i].loc.pack < items[j].loc.pack
		}
		return items[i].loc.offset < items[j].loc.offset
	})
	buf := alignedBuf(alignUp(r.cfg.ChunkSize + sealOverhead))
	for _, it := range items {
		for _, loc := range append([]location{it.loc}, it.alts...) {
			id := r.idx.packID(loc.pack)
			if alignUp(int(loc.length)) > len(buf) {
				buf = alignedBuf(alignUp(int(loc.length)))
			}
			err := r.authenticate(ctx, id, it.id, loc, buf)
			if isDamage(err) {
				if err := r.quarantine(ctx, []badCopy{{pack: id, offset: loc.offset, id: it.id}}, "gc: "+err.Error()); err != nil {
					return quarantined, fmt.Errorf("repack %v: %w", id, err)
				}
				quarantined++
				continue
			}
			if err != nil {
				return quarantined, fmt.Errorf("repack %v: %w", id, err)
			}
			if err := r.packer.add(ctx, it.id, buf[:loc.length], int(loc.rawLen), loc.flags); err != nil {
				return quarantined, fmt.Errorf("repack %v: %w", id, err)
			}
			break
		}
	}
	return quarantined, nil
}

// Size returns the bytes of all files of the repository.
func (r *Repository) Size(ctx context.Context) (int64, error) {
	var n int64
	for _, t := range blob.Types {
		err := r.be.List(ctx, t, func(fi blob.FileInfo) error {
			n += fi.Size
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("repository size: %w", err)
		}
	}
	if tb, ok := r.be.(interface {
		TempBytes(context.Context) (int64, error)
	}); ok {
		t, err := tb.TempBytes(ctx)
		if err != nil {
			return 0, fmt.Errorf("repository size: %w", err)
		}
		n += t
	}
	return n, nil
}
