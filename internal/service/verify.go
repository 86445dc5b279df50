package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/store"
)

// Verification of backups: the repository re-reads and authenticates
// everything a backup references (repository.VerifySnapshots); damaged
// data is quarantined there, so the next backup of a server holding it
// stores it again (which heals every backup referencing it). The outcome
// is recorded per backup in the store: extend_info says when a backup was
// last verified and whether it is damaged, the damaged ones are listed and
// counted, and a restore of a damaged backup is refused before it writes.

// verifyBatch is how many backups one repository verification reads: each
// holds a lease for its duration, and the results are recorded per batch.
const verifyBatch = 32

// VerifyRequest says which backups to verify.
type VerifyRequest struct {
	// ProjectID limits the run to one project; "" is every project (an
	// administrator's request, or the schedule).
	ProjectID string
	// ItemIDs, when given, are the backups to verify (of ProjectID);
	// otherwise every available backup not verified within MaxAge.
	ItemIDs []string
	// MaxAge: backups verified more recently are skipped; 0 verifies every
	// available backup of the scope.
	MaxAge time.Duration
}

// VerifyRun is the outcome of one verification run.
type VerifyRun struct {
	At          time.Time
	Duration    time.Duration
	Backups     int   // backups verified
	Damaged     int   // of them, found damaged
	Bytes       int64 // plaintext bytes read and authenticated
	Quarantined int   // damaged chunk copies this run quarantined
	// Results are the verifications recorded, in the order run.
	Results []*store.Verification
}

// BytesPerSecond is the run's verify throughput.
func (r VerifyRun) BytesPerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Duration.Seconds()
}

// LastVerify is the last verification run of this process that verified
// something (zero At: none yet).
func (s *Service) LastVerify() VerifyRun {
	s.verifyMu.Lock()
	defer s.verifyMu.Unlock()
	return s.lastVerify
}

// VerifyBackups verifies the backups req names and records the outcome of
// each. One run at a time per process: a second waits for the first. An
// error means the run could not go on (storage or database unreachable);
// what was verified before it is recorded.
func (s *Service) VerifyBackups(ctx context.Context, req VerifyRequest) (*VerifyRun, error) {
	select {
	case s.verifySem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.verifySem }()
	run := &VerifyRun{At: s.clock()}
	start := time.Now()
	defer func() {
		run.Duration = time.Since(start)
		if run.Backups > 0 {
			s.verifyMu.Lock()
			s.lastVerify = *run
			s.lastVerify.Results = nil
			s.verifyMu.Unlock()
		}
	}()
	if len(req.ItemIDs) > 0 {
		var items []*store.Item
		for _, id := range req.ItemIDs {
			it, err := s.store.GetItem(ctx, req.ProjectID, id)
			if errors.Is(err, store.ErrNotFound) {
				return nil, errf(CodeItemNotFound, "Checkpoint_item (%s) is not found.", id)
			}
			if err != nil {
				return nil, err
			}
			if it.Status != store.StatusAvailable {
				return nil, errf(CodeItemNotAvailable, "checkpoint item not available: backup %s is %s; only an available backup can be verified", it.ID, ClientStatus(it.Status))
			}
			items = append(items, it)
		}
		for len(items) > 0 {
			n := min(len(items), verifyBatch)
			if err := s.verifyItems(ctx, items[:n], run); err != nil {
				return run, err
			}
			items = items[n:]
		}
		return run, nil
	}
	// Backups verified since before is the cut; each batch is recorded,
	// so the next query does not return it again.
	before := run.At.Add(-req.MaxAge)
	if req.MaxAge <= 0 {
		before = run.At
	}
	// Each backup once per run, even should the clock step back (its new
	// verification would then look due again: the run ends there, the next
	// one goes on).
	done := make(map[string]bool)
	for {
		items, err := s.store.DueVerifications(ctx, req.ProjectID, before, verifyBatch)
		if err != nil {
			return run, err
		}
		items = slices.DeleteFunc(items, func(it *store.Item) bool { return done[it.ID] })
		if len(items) == 0 {
			return run, nil
		}
		for _, it := range items {
			done[it.ID] = true
		}
		if err := s.verifyItems(ctx, items, run); err != nil {
			return run, err
		}
	}
}

// verifyItems verifies one batch and records each backup's outcome.
func (s *Service) verifyItems(ctx context.Context, items []*store.Item, run *VerifyRun) error {
	var snaps []string
	for _, it := range items {
		if it.Info.SnapshotID != "" {
			snaps = append(snaps, it.Info.SnapshotID)
		}
	}
	rep, err := s.repo.VerifySnapshots(ctx, snaps)
	if err != nil {
		return err
	}
	run.Bytes += rep.Bytes
	run.Quarantined += rep.Quarantined
	damage := make(map[string]repository.SnapshotDamage, len(rep.Damage))
	for _, d := range rep.Damage {
		damage[d.Snapshot] = d
	}
	now := s.clock()
	for _, it := range items {
		if slices.Contains(rep.NotFound, it.Info.SnapshotID) {
			// Deleted meanwhile (its snapshot goes first): not damage.
			cur, err := s.store.GetItemAnyProject(ctx, it.ID)
			if err != nil {
				return err
			}
			if cur.Status != store.StatusAvailable {
				continue
			}
		}
		v := &store.Verification{ItemID: it.ID, ProjectID: it.ProjectID, VerifiedAt: now}
		switch d, bad := damage[it.Info.SnapshotID]; {
		case it.Info.SnapshotID == "" || slices.Contains(rep.NotFound, it.Info.SnapshotID):
			v.Damaged, v.Reason = true, "its data is not in the repository (snapshot "+it.Info.SnapshotID+" not found)"
		case bad && d.Unreadable:
			v.Damaged, v.Reason = true, "its manifest (snapshot "+it.Info.SnapshotID+") is damaged: no disk can be restored"
		case bad:
			v.Damaged = true
			var why []string
			for _, vd := range d.Volumes {
				v.Damage = append(v.Damage, store.DamagedVolume{VolumeID: vd.VolumeID, ChunkSize: vd.ChunkSize, Offsets: vd.Offsets})
				why = append(why, fmt.Sprintf("disk %s: %d bytes at offsets %s", vd.VolumeID, vd.ChunkSize, repository.FormatOffsets(vd.Offsets, 10)))
			}
			v.Reason = "damaged data cannot be restored (" + strings.Join(why, "; ") + "); back the server up again to store it anew"
		}
		if err := s.store.RecordVerification(ctx, v); err != nil {
			return err
		}
		run.Backups++
		if v.Damaged {
			run.Damaged++
			s.log.Warn("backup damaged", "backup_id", it.ID, "project_id", it.ProjectID, "reason", v.Reason)
		}
		run.Results = append(run.Results, v)
	}
	return nil
}

// verifyRunID is the operation id under which the fire times of scheduled
// verification are recorded, beside the policies' own (store.InsertFire):
// of the processes sharing the database, the first to record a fire time
// runs it and the others skip it.
const verifyRunID = "csbs:verify"

// RunVerifier verifies backups on a schedule until ctx is cancelled: at
// each time next gives (after the previous), every available backup not
// verified within maxAge. next returning the zero time stops it (verify
// off). Every process sharing the database runs a RunVerifier and they
// agree on the fire times (config.VerifySchedule.Next), so each fire time
// runs once in the cluster: on the process that records it first. A run
// cut short (the process killed) is not run again; what it did not verify
// is still due at the next fire time.
func (s *Service) RunVerifier(ctx context.Context, next func(time.Time) time.Time, maxAge time.Duration) {
	for {
		at := next(s.now())
		if at.IsZero() {
			return
		}
		t := time.NewTimer(time.Until(at))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		run, err := s.scheduledVerify(ctx, at, maxAge)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("verification failed; it runs again at its next time", "err", err)
			}
			continue
		}
		if run != nil && run.Backups > 0 {
			s.log.Info("verification", "backups", run.Backups, "damaged", run.Damaged, "bytes", run.Bytes,
				"quarantined", run.Quarantined, "seconds", run.Duration.Seconds(), "mb_per_s", run.BytesPerSecond()/1e6)
		}
	}
}

// scheduledVerify runs the scheduled verification of fire time at, unless
// another process sharing the database recorded that fire time first: then
// it returns a nil run and no error.
func (s *Service) scheduledVerify(ctx context.Context, at time.Time, maxAge time.Duration) (*VerifyRun, error) {
	ok, err := s.store.InsertFire(ctx, verifyRunID, at, "", "")
	if err != nil || !ok {
		return nil, err
	}
	return s.VerifyBackups(ctx, VerifyRequest{MaxAge: maxAge})
}

// Verifications lists the last verification of the backups of a project
// ("": every project), only the damaged ones when damagedOnly.
func (s *Service) Verifications(ctx context.Context, projectID string, damagedOnly bool) ([]*store.Verification, error) {
	return s.store.ListVerifications(ctx, projectID, damagedOnly)
}

// CountDamaged counts the backups found damaged (for metrics).
func (s *Service) CountDamaged(ctx context.Context) (int, error) { return s.store.CountDamaged(ctx) }

// markVerified sets Info.Verified on the available backups among items
// that were verified.
func (s *Service) markVerified(ctx context.Context, items []*store.Item) error {
	var ids []string
	for _, it := range items {
		if it.Status == store.StatusAvailable || it.Status == store.StatusWaitingRestore || it.Status == store.StatusRestoring {
			ids = append(ids, it.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	vs, err := s.store.VerificationsOf(ctx, ids)
	if err != nil {
		return err
	}
	for _, it := range items {
		it.Info.Verified = vs[it.ID]
	}
	return nil
}

// checkDamage refuses the restore of a backup its last verification found
// damaged, unless the damage has healed since (a later backup stored the
// data again): the refusal names each disk and the offsets it cannot
// restore, and nothing is written.
func (s *Service) checkDamage(ctx context.Context, it *store.Item) error {
	v := it.Info.Verified
	if v == nil || !v.Damaged {
		return nil
	}
	snap, err := s.repo.LoadSnapshot(ctx, it.Info.SnapshotID)
	if err != nil {
		return damaged(it.ID, v.Reason)
	}
	var why []string
	for i := range snap.Volumes {
		err := s.repo.CheckVolume(ctx, &snap.Volumes[i])
		var ue *repository.UnrestorableError
		if errors.As(err, &ue) {
			why = append(why, fmt.Sprintf("disk %s cannot be restored at offsets %s (%d bytes each)", ue.VolumeID, repository.FormatOffsets(ue.Offsets, 10), ue.ChunkSize))
		} else if err != nil {
			return err
		}
	}
	if len(why) == 0 {
		return nil // healed since it was verified
	}
	return damaged(it.ID, strings.Join(why, "; "))
}

func damaged(itemID, why string) *Error {
	return errf(CodeItemNotAvailable, "checkpoint item not available: backup %s is damaged: %s; nothing was written (back the server up again to store the data anew)", itemID, why)
}

// recordRestoreDamage records what a restore found it cannot restore (a
// damaged copy it met, quarantined on the way, or data missing) as the
// backup's verification, so that it is listed and counted as damaged.
func (s *Service) recordRestoreDamage(ctx context.Context, it *store.Item, ue *repository.UnrestorableError) {
	v := &store.Verification{ItemID: it.ID, ProjectID: it.ProjectID, VerifiedAt: s.clock(), Damaged: true,
		Damage: []store.DamagedVolume{{VolumeID: ue.VolumeID, ChunkSize: ue.ChunkSize, Offsets: ue.Offsets}},
		Reason: "a restore found: disk " + ue.VolumeID + ": " + ue.Error()}
	if err := s.store.RecordVerification(context.WithoutCancel(ctx), v); err != nil {
		s.log.Error("record damage found by a restore", "backup_id", it.ID, "err", err)
	}
}

// recordRestored records a restore that wrote every disk of a backup as its
// verification: each chunk was authenticated and re-hashed on the way, so
// the backup is intact (and a damage found earlier has healed).
func (s *Service) recordRestored(ctx context.Context, it *store.Item) {
	v := &store.Verification{ItemID: it.ID, ProjectID: it.ProjectID, VerifiedAt: s.clock()}
	if err := s.store.RecordVerification(context.WithoutCancel(ctx), v); err != nil {
		s.log.Error("record a restore as verification", "backup_id", it.ID, "err", err)
	}
}
