package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"sync"

	"github.com/csbs/csbs/internal/repository/blob"
)

// VerifyReport is what Verify found. The repository is healthy when OK.
type VerifyReport struct {
	Packs     int   // packs read
	Chunks    int   // chunks authenticated
	Bytes     int64 // pack bytes read
	Snapshots int   // snapshots checked

	DamagedPacks      []string  // packs with any problem (unreadable trailer, damaged chunk, ...)
	DamagedChunks     []ChunkID // chunks whose stored copy fails authentication or its id check
	MissingChunks     []ChunkID // chunks a snapshot references that no readable pack holds
	AffectedSnapshots []string  // snapshots that reference damaged or missing chunks, or cannot be read
	Problems          []string  // one human-readable line per problem found

	// Quarantined is how many damaged chunk copies this run quarantined
	// (see quarantine.go): backups store their data again from now on.
	Quarantined int
	// Damage says, per affected snapshot, which volumes and offsets cannot
	// be restored (Unreadable: the snapshot itself cannot be read).
	Damage []SnapshotDamage
	// NotFound lists the snapshots VerifySnapshots was asked for that do
	// not exist (deleted meanwhile).
	NotFound []string
}

// SnapshotDamage is what of one snapshot cannot be restored.
type SnapshotDamage struct {
	Snapshot   string
	Unreadable bool // the snapshot file itself is damaged
	Volumes    []VolumeDamage
}

// VolumeDamage names the chunks of a volume that cannot be restored, by
// their offsets in the volume (each covers ChunkSize bytes).
type VolumeDamage struct {
	VolumeID  string
	ChunkSize int
	Offsets   []int64
}

// OK reports whether Verify found no problem.
func (v *VerifyReport) OK() bool { return len(v.Problems) == 0 }

// Verify re-reads every pack and authenticates every chunk (GCM tag, then
// the id re-hashed from the plaintext), compares each pack's trailer with
// its index file, checks that every chunk of every snapshot is stored intact,
// and names the snapshots any damage affects. An error means Verify itself
// could not run (storage unreachable); damage is reported, not returned.
func (r *Repository) Verify(ctx context.Context) (*VerifyReport, error) {
	release, err := r.begin(ctx, leaseVerify)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer release()
	rep := &VerifyReport{}
	packs, err := listSizes(ctx, r.be, blob.PackFile)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	indexes, marked := r.idx.entriesByPack()
	for name := range packs {
		if id, err := parsePackID(name); err == nil && marked[id] {
			delete(packs, name) // garbage GC is removing
		}
	}
	// The snapshots first: each chunk they reference is re-hashed in the
	// dedup domain of its manifest.
	ids, err := r.snapshotIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	sort.Strings(ids)
	snaps := make([]*Snapshot, len(ids))
	snapErrs := make([]error, len(ids))
	domains := make(map[ChunkID]string)
	for i, id := range ids {
		snaps[i], snapErrs[i] = r.LoadSnapshot(ctx, id)
		if snapErrs[i] != nil && !errors.Is(snapErrs[i], ErrNotFound) && !isDamage(snapErrs[i]) {
			return nil, fmt.Errorf("verify: %w", snapErrs[i])
		}
		if snapErrs[i] == nil {
			for _, vm := range snaps[i].Volumes {
				for _, c := range vm.Chunks {
					if !c.IsZero() {
						domains[c] = vm.Domain
					}
				}
			}
		}
	}

	var mu sync.Mutex
	var badCopies []badCopy // quarantined once every pack was read
	damaged := make(map[string]bool)
	problem := func(pack string, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		if pack != "" && !damaged[pack] {
			damaged[pack] = true
			rep.DamagedPacks = append(rep.DamagedPacks, pack)
		}
	}
	names := make([]string, 0, len(packs))
	for n := range packs {
		names = append(names, n)
	}
	sort.Strings(names)
	work := make(chan string)
	var wg sync.WaitGroup
	var fatal error
	for range r.opts.Workers {
		wg.Go(func() {
			hs := hashers{k: r.keys, domains: domains, by: map[string]hasher{}}
			buf := make([]byte, r.cfg.ChunkSize+sealOverhead)
			out := make([]byte, r.cfg.ChunkSize)
			for name := range work {
				if err := r.verifyPack(ctx, name, packs[name], indexes, hs, buf, out, rep, &mu, &badCopies, problem); err != nil {
					mu.Lock()
					if fatal == nil {
						fatal = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, n := range names {
		work <- n
	}
	close(work)
	wg.Wait()
	if fatal != nil {
		return nil, fmt.Errorf("verify: %w", fatal)
	}
	sort.Strings(rep.DamagedPacks)
	for id := range indexes {
		if _, ok := packs[id.String()]; !ok {
			problem("", "the index lists pack %s, which is missing", id)
		}
	}
	for _, name := range r.idx.damagedFiles() {
		problem("", "index file %s is damaged (GC re-indexes the packs a snapshot needs)", name)
	}
	before := r.Quarantined()
	if err := r.quarantine(ctx, badCopies, "verify: chunk failed authentication"); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	rep.Quarantined = r.Quarantined() - before

	missing := make(map[ChunkID]bool)
	for i, id := range ids {
		s, err := snaps[i], snapErrs[i]
		if errors.Is(err, ErrNotFound) {
			continue
		}
		rep.Snapshots++
		if err != nil {
			if !isDamage(err) {
				return nil, fmt.Errorf("verify: %w", err)
			}
			problem("", "%v", err)
			rep.AffectedSnapshots = append(rep.AffectedSnapshots, id)
			rep.Damage = append(rep.Damage, SnapshotDamage{Snapshot: id, Unreadable: true})
			continue
		}
		if sd := r.snapshotDamage(s, missing, rep, problem); sd != nil {
			rep.AffectedSnapshots = append(rep.AffectedSnapshots, id)
			rep.Damage = append(rep.Damage, *sd)
		}
	}
	return rep, nil
}

// snapshotDamage returns what of s cannot be restored with the index as
// loaded (damaged copies quarantined), or nil. Chunks neither readable nor
// quarantined are added to rep.MissingChunks once (missing tracks them).
func (r *Repository) snapshotDamage(s *Snapshot, missing map[ChunkID]bool, rep *VerifyReport, problem func(pack, format string, args ...any)) *SnapshotDamage {
	var sd *SnapshotDamage
	for _, vm := range s.Volumes {
		var vd *VolumeDamage
		for i, c := range vm.Chunks {
			if c.IsZero() || r.idx.has(c) {
				continue
			}
			off := int64(i) * int64(vm.ChunkSize)
			if r.idx.quarantined(c) {
				problem("", "snapshot %s volume %q: chunk %v at offset %d is damaged (quarantined: the next backup holding this data stores it again)", s.ID, vm.VolumeID, c, off)
			} else {
				if !missing[c] {
					missing[c] = true
					rep.MissingChunks = append(rep.MissingChunks, c)
				}
				problem("", "snapshot %s volume %q: chunk %v at offset %d is missing", s.ID, vm.VolumeID, c, off)
			}
			if sd == nil {
				sd = &SnapshotDamage{Snapshot: s.ID}
			}
			if vd == nil {
				sd.Volumes = append(sd.Volumes, VolumeDamage{VolumeID: vm.VolumeID, ChunkSize: vm.ChunkSize})
				vd = &sd.Volumes[len(sd.Volumes)-1]
			}
			vd.Offsets = append(vd.Offsets, off)
		}
	}
	return sd
}

// verifyPack checks one pack. It returns an error only when storage fails.
// hashers re-hashes chunk ids in the dedup domain of the snapshots that
// reference them; one per verify worker.
type hashers struct {
	k       *keys
	domains map[ChunkID]string // of every chunk a snapshot references
	by      map[string]hasher
}

// of returns the hasher of chunk id, and whether a snapshot references it
// (an unreferenced chunk is garbage of unknown domain: only its
// authentication can be checked).
func (hs hashers) of(id ChunkID) (hasher, bool) {
	d, ok := hs.domains[id]
	h, have := hs.by[d]
	if !have {
		h = newDomainHasher(hs.k, d)
		hs.by[d] = h
	}
	return h, ok
}

func (r *Repository) verifyPack(ctx context.Context, name string, size int64, indexes map[packID][]packEntry,
	hs hashers, buf, out []byte, rep *VerifyReport, mu *sync.Mutex, badCopies *[]badCopy,
	problem func(pack, format string, args ...any)) error {
	pid, _ := parsePackID(name)
	indexed, ok := indexes[pid]
	trailer, err := r.readTrailer(ctx, name, size)
	if err != nil && !ok && errors.Is(err, fs.ErrNotExist) {
		return nil // garbage without index, removed by GC meanwhile
	}
	if err != nil {
		if !isDamage(err) {
			return err
		}
		problem(name, "%v", err)
	}
	if !ok {
		problem("", "pack %s has no index file (unreferenced garbage from an interrupted backup, or a lost index; GC handles both)", name)
	}
	if trailer != nil && indexed != nil && !sameEntries(trailer, indexed) {
		problem(name, "pack %s: trailer and index file disagree", name)
	}
	entries := indexed
	if entries == nil {
		entries = trailer
	}
	var n int
	var bytes int64
	for _, e := range entries {
		if r.idx.isBad(pid, e.Offset) {
			continue // damage already found and contained
		}
		if int(e.Length) > len(buf) {
			problem(name, "pack %s: chunk %v is larger than a chunk", name, e.ID)
			continue
		}
		blob := buf[:e.Length]
		err := loadInto(ctx, r.be, packHandle(pid), blob, int64(e.Offset))
		if err == nil {
			loc := location{offset: e.Offset, length: e.Length, rawLen: e.RawLen, flags: e.Flags}
			h, referenced := hs.of(e.ID)
			_, err = openChunk(r.keys, r.dec, h, e.ID, loc, blob, out)
			if errors.Is(err, errChunkID) && !referenced {
				err = nil // authenticated garbage of another dedup domain
			}
			if err != nil {
				err = damageError{err}
			}
		}
		n++
		bytes += int64(e.Length)
		if err != nil {
			if !isDamage(err) {
				return err
			}
			problem(name, "pack %s: chunk %v at pack offset %d: %v", name, e.ID, e.Offset, err)
			mu.Lock()
			rep.DamagedChunks = append(rep.DamagedChunks, e.ID)
			*badCopies = append(*badCopies, badCopy{pack: pid, offset: e.Offset, id: e.ID})
			mu.Unlock()
		}
	}
	mu.Lock()
	rep.Packs++
	rep.Chunks += n
	rep.Bytes += bytes
	mu.Unlock()
	return nil
}

func sameEntries(a, b []packEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// VerifySnapshots checks what the snapshots ids reference, and nothing
// else: every chunk is read from the copy a restore would read,
// authenticated and re-hashed in its manifest's dedup domain (once,
// however many of the snapshots share it). A damaged copy is quarantined
// and the next copy tried, as a restore does. The report's Damage names,
// per snapshot, what cannot be restored; Snapshots counts the snapshots
// read, Chunks and Bytes the chunks checked and their plaintext bytes
// (Bytes over the time taken is the verify throughput). Snapshots that do
// not exist are listed in NotFound. An error means the check could not
// run (storage unreachable); damage is reported, not returned.
func (r *Repository) VerifySnapshots(ctx context.Context, ids []string) (*VerifyReport, error) {
	release, err := r.begin(ctx, leaseVerify)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer release()
	rep := &VerifyReport{}
	before := r.Quarantined()
	type work struct {
		id     ChunkID
		domain string
		n      int64 // plaintext bytes
		pack   packID
		off    uint32
	}
	seen := make(map[ChunkID]bool)
	var todo []work
	var snaps []*Snapshot
	for _, id := range ids {
		s, err := r.LoadSnapshot(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			rep.NotFound = append(rep.NotFound, id)
			continue
		case isDamage(err):
			rep.Snapshots++
			rep.Problems = append(rep.Problems, err.Error())
			rep.AffectedSnapshots = append(rep.AffectedSnapshots, id)
			rep.Damage = append(rep.Damage, SnapshotDamage{Snapshot: id, Unreadable: true})
			continue
		case err != nil:
			return nil, fmt.Errorf("verify: %w", err)
		}
		rep.Snapshots++
		snaps = append(snaps, s)
		for _, vm := range s.Volumes {
			cs := int64(vm.ChunkSize)
			for i, c := range vm.Chunks {
				if c.IsZero() || seen[c] {
					continue
				}
				seen[c] = true
				w := work{id: c, domain: vm.Domain, n: min(cs, vm.Size-int64(i)*cs)}
				if loc, p, ok := r.idx.lookup(c); ok {
					w.pack, w.off = p, loc.offset
				}
				todo = append(todo, w)
			}
		}
	}
	// In pack order: each pack is read front to back.
	sort.Slice(todo, func(i, j int) bool {
		if c := bytes.Compare(todo[i].pack[:], todo[j].pack[:]); c != 0 {
			return c < 0
		}
		return todo[i].off < todo[j].off
	})
	ch := make(chan work)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fatal error
	for range restoreWorkers(r.opts) {
		wg.Go(func() {
			hs := map[string]hasher{}
			for w := range ch {
				h, ok := hs[w.domain]
				if !ok {
					h = newDomainHasher(r.keys, w.domain)
					hs[w.domain] = h
				}
				buf, err := r.restBufs.get(ctx)
				if err == nil {
					half := len(buf) / 2
					_, err = r.fetchChunk(ctx, h, w.id, buf[:half], buf[half:], 0, w.n)
					r.restBufs.put(buf)
				}
				mu.Lock()
				switch {
				case err == nil:
					rep.Chunks++
					rep.Bytes += w.n
				case isDamage(err) || !r.idx.has(w.id):
					rep.DamagedChunks = append(rep.DamagedChunks, w.id)
				case fatal == nil:
					fatal = err
				}
				mu.Unlock()
			}
		})
	}
	for _, w := range todo {
		ch <- w
	}
	close(ch)
	wg.Wait()
	if fatal != nil {
		return nil, fmt.Errorf("verify: %w", fatal)
	}
	rep.Quarantined = r.Quarantined() - before
	missing := make(map[ChunkID]bool)
	problem := func(_ string, format string, args ...any) {
		rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
	}
	for _, s := range snaps {
		if sd := r.snapshotDamage(s, missing, rep, problem); sd != nil {
			rep.AffectedSnapshots = append(rep.AffectedSnapshots, s.ID)
			rep.Damage = append(rep.Damage, *sd)
		}
	}
	return rep, nil
}
