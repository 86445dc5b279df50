package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/jobs"
	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/store"
)

// progressEvery is how often a running backup writes its progress.
const progressEvery = 500 * time.Millisecond

// ProtectJob returns the handler of protect jobs. After an automatic
// backup of a policy it applies the policy's retention (policies.go).
func (s *Service) ProtectJob() jobs.Handler { return retainAfter{protectJob{s}} }

type protectJob struct{ s *Service }

// Run backs up every disk of the item's server. It starts over when a
// previous run was interrupted: chunks that run stored are found again by
// deduplication, and the snapshot id is the item id, so a snapshot written
// just before a crash is replaced, never duplicated.
func (h protectJob) Run(ctx context.Context, j *store.Job) error {
	s := h.s
	it, err := s.store.GetItemAnyProject(ctx, j.ItemID)
	if err != nil {
		return fmt.Errorf("load backup %s: %w", j.ItemID, err)
	}
	if it.Status != store.StatusWaitingProtect && it.Status != store.StatusProtecting {
		return nil // finished or failed by an earlier run
	}
	var args protectArgs
	if len(j.Args) > 0 {
		if err := json.Unmarshal(j.Args, &args); err != nil {
			return fmt.Errorf("job arguments: %w", err)
		}
	}

	start := s.clock()
	it.Status = store.StatusProtecting
	it.Info.StartedAt = &start
	it.Info.Progress = 0
	for i := range it.Info.Volumes {
		it.Info.Volumes[i].Status = store.StatusProtecting
	}
	if err := s.store.UpdateItem(ctx, it); err != nil {
		return fmt.Errorf("mark backup protecting: %w", err)
	}

	srv, err := s.compute.Server(ctx, it.ProjectID, it.ResourceID)
	if errors.Is(err, compute.ErrNotFound) {
		return fmt.Errorf("server %s no longer exists", it.ResourceID)
	}
	if err != nil {
		return err
	}
	// Open the backup before reading the parent: chunks taken from the
	// parent unread must not be collected while this backup runs.
	// Each project deduplicates only against itself (unless configured
	// otherwise): whether a backup stored new data must tell nothing
	// about other projects' data.
	domain := it.ProjectID
	if s.sharedDedup {
		domain = ""
	}
	b := s.repo.NewBackupIn(domain)
	defer b.Abort()
	parent, parentItem, token := s.parentSnapshot(ctx, it, args.Incremental)
	req := compute.SnapshotRequest{BackupID: it.ID}
	if parentItem != nil {
		req.Parent = &compute.Parent{BackupID: parentItem.ID, Token: token}
	}
	snap, err := s.compute.Snapshot(ctx, srv, req)
	if err != nil {
		return err // a *compute.VolumeError names the disk
	}
	defer snap.Release()

	var total int64
	for _, v := range snap.Volumes {
		total += v.Size
	}
	var done atomic.Int64
	stop := s.reportProgress(ctx, it, total, &done)
	defer stop()

	rsnap := &repository.Snapshot{
		ID:   snapshotID(it.ID),
		Time: start,
		Meta: map[string]string{
			"project_id": it.ProjectID, "checkpoint_id": it.CheckpointID, "item_id": it.ID,
			"server_id": srv.ID, "server_name": srv.Name, "backup_name": it.Name,
			"created_at": it.CreatedAt.Format(time.RFC3339Nano),
		},
	}
	if snap.Token != "" {
		rsnap.Meta[changeTokenKey] = snap.Token
	}
	vbs := make([]store.VolumeBackup, 0, len(snap.Volumes))
	var sum repository.VolumeStats
	var before int64
	for _, sv := range snap.Volumes {
		var pvm *repository.VolumeManifest
		if parent != nil {
			pvm = parent[sv.Volume.ID]
		}
		base := before
		src, reason, err := source(ctx, sv, pvm, domain)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &compute.VolumeError{VolumeID: sv.Volume.ID, Name: sv.Volume.Name, Path: sv.Volume.Path, Err: err}
		}
		vm, st, err := b.VolumeFrom(ctx, src, pvm, func(n int64) { done.Store(base + n) })
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &compute.VolumeError{VolumeID: sv.Volume.ID, Name: sv.Volume.Name, Path: sv.Volume.Path, Err: err}
		}
		before += sv.Size
		vm.VolumeID, vm.Name = sv.Volume.ID, sv.Volume.Name
		rsnap.Volumes = append(rsnap.Volumes, *vm)
		vb := volumeBackup(it, sv, st, pvm != nil)
		vb.ReadBytes, vb.ReadReason = st.ReadBytes, reason
		vbs = append(vbs, vb)
		sum.ReadBytes += st.ReadBytes
		sum.Size += st.Size
		sum.UsedBytes += st.UsedBytes
		sum.ChangedBytes += st.ChangedBytes
		sum.StoredBytes += st.StoredBytes
	}
	if _, err := b.Commit(ctx, rsnap); err != nil {
		return fmt.Errorf("save backup manifest: %w", err)
	}
	// The backup is committed: the driver may keep what this snapshot's
	// token names for the next incremental. Failing that only makes the
	// next backup read everything.
	if err := snap.Commit(); err != nil {
		s.log.WarnContext(ctx, "the next backup of this server will read every disk whole", "item_id", it.ID, "err", err)
	}
	stop()

	end := s.clock()
	it.Status = store.StatusAvailable
	it.Info.Progress = 100
	it.Info.FinishedAt = &end
	it.Info.Incremental = parent != nil
	if parentItem != nil {
		it.Info.ParentItemID = parentItem.ID
	}
	it.Info.UsedBytes = sum.UsedBytes
	it.Info.SizeBytes = sum.UsedBytes
	if parent != nil {
		it.Info.SizeBytes = sum.ChangedBytes
	}
	it.Info.StoredBytes = sum.StoredBytes
	it.Info.ReadBytes = sum.ReadBytes
	it.Info.SpaceSavingRatio = savingRatio(sum.UsedBytes, sum.StoredBytes)
	if secs := end.Sub(start).Seconds(); secs > 0 {
		it.Info.AverageSpeedKBps = int64(float64(total) / 1024 / secs)
	}
	it.Info.SnapshotID = rsnap.ID
	it.Info.CrashConsistent = snap.CrashConsistent
	it.Info.Quiesced = snap.Quiesced
	it.Info.SnapshotMethod = snap.Method
	it.Info.Volumes = vbs
	if err := s.store.UpdateItem(context.WithoutCancel(ctx), it); err != nil {
		return fmt.Errorf("mark backup available: %w", err)
	}
	s.meter.BackedUp(total, sum.StoredBytes)
	return nil
}

// snapshotID names the repository snapshot of a backup: the backup's id
// without dashes (the repository takes hex names). A fixed name makes a
// backup re-run after a crash replace its snapshot, never add a second.
func snapshotID(itemID string) string { return strings.ReplaceAll(itemID, "-", "") }

// Fail records why the backup failed.
func (h protectJob) Fail(ctx context.Context, j *store.Job, reason error) {
	h.s.failItem(ctx, j.ItemID, "backup", []string{store.StatusWaitingProtect, store.StatusProtecting}, reason)
}

// failItem moves a backup to error with a reason, if its status is one of from.
func (s *Service) failItem(ctx context.Context, itemID, op string, from []string, reason error) {
	ctx = context.WithoutCancel(ctx)
	it, err := s.store.GetItemAnyProject(ctx, itemID)
	if err != nil {
		s.log.ErrorContext(ctx, "load failed backup", "item_id", itemID, "err", err)
		return
	}
	ok := false
	for _, st := range from {
		ok = ok || it.Status == st
	}
	if !ok {
		return
	}
	now := s.clock()
	it.Status = store.StatusError
	it.Info.FailOp = op
	it.Info.FailReason = failReason(op, reason)
	it.Info.FailCode = CodeInternal
	it.Info.FinishedAt = &now
	for i := range it.Info.Volumes {
		it.Info.Volumes[i].Status = store.StatusError
	}
	if err := s.store.UpdateItem(ctx, it); err != nil {
		s.log.ErrorContext(ctx, "record backup failure", "item_id", itemID, "err", err)
	}
}

// changeTokenKey is the repository snapshot's metadata key that keeps the
// compute driver's Snapshot.Token for the next backup's changes.
const changeTokenKey = "change_token"

// parentSnapshot returns, for an incremental backup, the volume manifests of
// the newest earlier backup of the same server that is still available, and
// the compute driver's token kept with it. A missing or unreadable parent
// makes the backup full.
func (s *Service) parentSnapshot(ctx context.Context, it *store.Item, incremental bool) (map[string]*repository.VolumeManifest, *store.Item, string) {
	if !incremental {
		return nil, nil, ""
	}
	p, err := s.store.LatestItem(ctx, it.ProjectID, it.ResourceID,
		[]string{store.StatusAvailable, store.StatusWaitingRestore, store.StatusRestoring}, it.CreatedAt)
	if err != nil || p.Info.SnapshotID == "" {
		return nil, nil, ""
	}
	rs, err := s.repo.LoadSnapshot(ctx, p.Info.SnapshotID)
	if err == nil {
		err = checkSnapshot(rs, p)
	}
	if err != nil {
		s.log.WarnContext(ctx, "previous backup unreadable; taking a full backup", "item_id", it.ID, "parent", p.ID, "err", err)
		return nil, nil, ""
	}
	m := map[string]*repository.VolumeManifest{}
	for i := range rs.Volumes {
		m[rs.Volumes[i].VolumeID] = &rs.Volumes[i]
	}
	return m, p, rs.Meta[changeTokenKey]
}

// source asks a snapshot volume for its allocation and its changes and
// checks them against the contract (package compute) before the repository
// trusts them to skip data. It also says how the volume is read, for
// extend_info.
func source(ctx context.Context, sv compute.SnapshotVolume, parent *repository.VolumeManifest, domain string) (repository.Source, string, error) {
	alloc, err := sv.Reader.Allocated(ctx)
	if err != nil {
		return repository.Source{}, "", fmt.Errorf("allocated extents: %w", err)
	}
	if err := compute.CheckExtents(alloc, sv.Size); err != nil {
		return repository.Source{}, "", fmt.Errorf("the compute driver's allocated extents: %w", err)
	}
	src := repository.Source{Name: sv.Volume.Name, Data: sv.Reader, Size: sv.Size, Allocated: extents(alloc)}
	ch, err := sv.Reader.Changed(ctx)
	if err != nil {
		return repository.Source{}, "", fmt.Errorf("changed extents: %w", err)
	}
	reason := "full read: " + ch.Reason
	switch {
	case !ch.Known:
	case parent == nil:
		reason = "full read: no earlier backup of this disk"
	case parent.Domain != domain:
		reason = "full read: the earlier backup is in another dedup domain"
	case parent.Size != sv.Size:
		reason = fmt.Sprintf("full read: the disk's size changed from %d to %d bytes", parent.Size, sv.Size)
	default:
		if err := compute.CheckExtents(ch.Extents, sv.Size); err != nil {
			return repository.Source{}, "", fmt.Errorf("the compute driver's changed extents: %w", err)
		}
		src.ChangesKnown, src.Changed = true, extents(ch.Extents)
		reason = "changed extents only: " + ch.Reason
	}
	return src, reason, nil
}

func extents(in []compute.Extent) []repository.Range {
	out := make([]repository.Range, len(in))
	for i, e := range in {
		out[i] = repository.Range{Off: e.Off, Len: e.Len}
	}
	return out
}

// reportProgress writes the progress of a running backup every
// progressEvery until the returned stop is called.
func (s *Service) reportProgress(ctx context.Context, it *store.Item, total int64, done *atomic.Int64) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			n := done.Load()
			p := 0
			if total > 0 {
				p = int(n * 100 / total)
			}
			if p > 99 {
				p = 99 // 100 only once the backup is available
			}
			if p == it.Info.Progress && n == it.Info.ReadBytes {
				continue
			}
			it.Info.Progress, it.Info.ReadBytes = p, n
			if err := s.store.UpdateItem(ctx, it); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "write backup progress", "item_id", it.ID, "err", err)
			}
		}
	}()
	return func() {
		cancel()
		<-finished
	}
}

func volumeBackup(it *store.Item, sv compute.SnapshotVolume, st repository.VolumeStats, incremental bool) store.VolumeBackup {
	var vb store.VolumeBackup
	for _, v := range it.Info.Volumes {
		if v.SourceVolumeID == sv.Volume.ID {
			vb = v
		}
	}
	if vb.ID == "" {
		vb = store.VolumeBackup{ID: newID(), Name: it.Name, SourceVolumeID: sv.Volume.ID, SourceVolumeName: sv.Volume.Name}
	}
	vb.SourceSizeBytes = sv.Size
	vb.SourceVolumeSize = (sv.Size + 1<<30 - 1) >> 30
	vb.Bootable = sv.Volume.Bootable
	vb.Incremental = incremental
	vb.Status = store.StatusAvailable
	vb.UsedBytes = st.UsedBytes
	vb.SizeBytes = st.UsedBytes
	if incremental {
		vb.SizeBytes = st.ChangedBytes
	}
	vb.StoredBytes = st.StoredBytes
	vb.SpaceSavingRatio = savingRatio(st.UsedBytes, st.StoredBytes)
	if secs := st.Duration.Seconds(); secs > 0 {
		vb.AverageSpeedMBps = int64(float64(st.Size) / (1 << 20) / secs)
	}
	vb.SnapshotID = snapshotID(it.ID)
	return vb
}

// savingRatio is the percentage of the used data that deduplication and
// compression kept out of the repository.
func savingRatio(used, stored int64) int {
	if used <= 0 {
		return 0
	}
	r := 100 * (1 - float64(stored)/float64(used))
	return int(math.Max(0, math.Min(100, math.Round(r))))
}

// DeleteJob returns the handler of delete jobs.
func (s *Service) DeleteJob() jobs.Handler { return deleteJob{s} }

type deleteJob struct{ s *Service }

// Run removes the backup's snapshot from the repository, then the backup
// from the queries, then asks for garbage collection of its chunks.
func (h deleteJob) Run(ctx context.Context, j *store.Job) error {
	s := h.s
	it, err := s.store.GetItemAnyProject(ctx, j.ItemID)
	if err != nil {
		return fmt.Errorf("load backup %s: %w", j.ItemID, err)
	}
	if it.Status == store.StatusDeleted {
		return nil
	}
	if _, err := s.store.SetItemStatus(ctx, it.ID, []string{store.StatusWaitingDelete}, store.StatusDeleting); err != nil {
		return err
	}
	if it.Info.SnapshotID != "" {
		if err := s.repo.DeleteSnapshot(ctx, it.Info.SnapshotID); err != nil {
			return fmt.Errorf("delete backup data: %w", err)
		}
	}
	ok, err := s.store.SetItemStatus(context.WithoutCancel(ctx), it.ID, []string{store.StatusDeleting}, store.StatusDeleted)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("backup %s left the deleting status while being deleted", it.ID)
	}
	s.dropKeptOf(ctx, it.ID) // its clone, if kept, can never serve again
	s.KickGC()
	return nil
}

// liveStatuses are the statuses of a backup that a later incremental may
// still be counted from, or that may still commit.
var liveStatuses = []string{store.StatusWaitingProtect, store.StatusProtecting, store.StatusAvailable,
	store.StatusWaitingRestore, store.StatusRestoring}

// Fail records why the delete failed; the backup goes to error and can be
// deleted again.
func (h deleteJob) Fail(ctx context.Context, j *store.Job, reason error) {
	h.s.failItem(ctx, j.ItemID, "delete", []string{store.StatusWaitingDelete, store.StatusDeleting}, reason)
}

// gcRetry is how long a garbage collection waits after finding another
// process's collection running on the repository.
const gcRetry = time.Minute

// gcRetryAfterError is when a failed garbage collection runs again: soon,
// since on a full disk it is what frees the space (a pack that failed to
// be written fails only the first pass after it).
const gcRetryAfterError = 10 * time.Second

// GCRun is the outcome of a garbage collection this process ran.
type GCRun struct {
	At       time.Time
	Duration time.Duration
	Stats    repository.GCStats
}

// LastGC is the last garbage collection this process ran (zero At: none
// yet).
func (s *Service) LastGC() GCRun {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	return s.lastGC
}

// KickGC asks for a garbage collection soon. Requests made while one is
// pending are merged.
func (s *Service) KickGC() {
	select {
	case s.gcKick <- struct{}{}:
	default:
	}
}

// RunGC collects garbage in the repository whenever KickGC asks, until ctx
// is cancelled. Garbage that a crash leaves before a collection is
// collected by the next one; it is never data a backup needs.
func (s *Service) RunGC(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.gcKick:
		}
		start := time.Now()
		st, err := s.repo.GC(ctx)
		if errors.Is(err, repository.ErrBusy) {
			// Another process (maybe on another host) collects garbage in
			// the repository now: try again later.
			s.log.Info("garbage collection postponed: another one runs on the repository", "retry_in", gcRetry)
			time.AfterFunc(gcRetry, s.KickGC)
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("garbage collection failed; it runs again soon", "err", err, "retry_in", gcRetryAfterError)
				time.AfterFunc(gcRetryAfterError, s.KickGC)
			}
			continue
		}
		s.gcMu.Lock()
		s.lastGC = GCRun{At: start, Duration: time.Since(start), Stats: st}
		s.gcMu.Unlock()
		s.log.Info("garbage collection", "packs_deleted", st.PacksDeleted, "packs_marked", st.PacksMarked,
			"packs_rewritten", st.PacksRewritten, "packs_pending", st.PacksPending,
			"bytes_freed", st.BytesFreed, "seconds", time.Since(start).Seconds())
		if st.PacksPending > 0 {
			// Garbage too young to mark, or marked packs that wait for
			// operations begun before the mark: collect again once the
			// margin passed.
			time.AfterFunc(s.repo.GCMargin()+time.Second, s.KickGC)
		}
	}
}
