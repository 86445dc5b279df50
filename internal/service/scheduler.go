package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/csbs/csbs/internal/schedule"
	"github.com/csbs/csbs/internal/store"
)

// RunScheduler fires due scheduled operations every tick, and sweeps the
// retention of every policy every hour (so that backups expire by age even
// when no new backup is made), until ctx is cancelled.
func (s *Service) RunScheduler(ctx context.Context, tick time.Duration) {
	if tick <= 0 {
		tick = 10 * time.Second
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var swept time.Time
	for {
		if err := s.FireDue(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("scheduler", "err", err)
		}
		if time.Since(swept) >= time.Hour {
			swept = time.Now()
			if err := s.SweepRetention(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("retention sweep", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// FireDue runs every enabled scheduled operation whose fire time has come.
// A fire time runs exactly once across processes sharing the database: the
// operation's next fire time is advanced (compare-and-set) and the fire
// time recorded (unique) in the same transaction that records the backups.
// A fire time more than an hour late (no process ran then) is skipped and
// logged; of several missed ones only the latest can run.
func (s *Service) FireDue(ctx context.Context) error {
	now := s.clock()
	due, err := s.store.DueOperations(ctx, now)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range due {
		if err := s.fire(ctx, d, now); err != nil {
			errs = append(errs, fmt.Errorf("scheduled operation %s of policy %s: %w", d.OperationID, d.PolicyID, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) fire(ctx context.Context, d store.DueOperation, now time.Time) error {
	sched, err := schedule.Parse(d.Pattern)
	if err != nil { // stored before a rule change; never fires again
		s.log.Error("scheduled operation has an invalid pattern; disabling its schedule", "operation_id", d.OperationID, "policy_id", d.PolicyID, "err", err)
		_, err := s.store.AdvanceOperation(ctx, d.OperationID, d.NextFire, nil)
		return err
	}
	next := sched.Next(now)
	at := sched.Prev(now)
	if at.Before(d.NextFire) {
		at = d.NextFire
	}
	log := s.log.With("policy_id", d.PolicyID, "operation_id", d.OperationID, "fire_time", at.Format(time.RFC3339))
	if now.Sub(at) >= lateLimit {
		ok, err := s.store.AdvanceOperation(ctx, d.OperationID, d.NextFire, &next)
		if ok {
			log.Warn("skipped fire times missed by more than an hour (no csbs process ran then)",
				"first_missed", d.NextFire.Format(time.RFC3339), "next_fire", next.Format(time.RFC3339))
		}
		return err
	}
	if at.After(d.NextFire) {
		log.Warn("skipped earlier missed fire times; running the latest", "first_missed", d.NextFire.Format(time.RFC3339))
	}
	claim := func(tx store.Tx, checkpointID string) (bool, error) {
		ok, err := tx.AdvanceOperation(ctx, d.OperationID, d.NextFire, &next)
		if err != nil || !ok {
			return false, err
		}
		return tx.InsertFire(ctx, d.OperationID, at, d.PolicyID, checkpointID)
	}
	p, err := s.store.GetPolicy(ctx, d.ProjectID, d.PolicyID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted meanwhile; so is the operation
	}
	if err != nil {
		return err
	}
	servers := make([]string, 0, len(p.Resources))
	for _, r := range p.Resources {
		servers = append(servers, r.ID)
	}
	var cp *CheckpointView
	if len(servers) > 0 {
		cp, err = s.startPolicyBackup(ctx, p, servers, true, claim)
	} else {
		err = errf(CodePlanNoResource, "backup policy has no servers")
	}
	if errors.Is(err, errNotMine) {
		// Another process ran this fire time, or it ran before and a
		// concurrent policy update wrote the old next fire time back:
		// move on (a no-op when the winner already did).
		_, err := s.store.AdvanceOperation(ctx, d.OperationID, d.NextFire, &next)
		return err
	}
	if e, ok := AsError(err); ok {
		// Nothing can be backed up this time: record the fire time as
		// done so that it is not retried, and say why.
		var took bool
		err = s.store.InTx(ctx, func(tx store.Tx) error {
			var err error
			took, err = claim(tx, "")
			return err
		})
		if took {
			log.Warn("scheduled backup made nothing", "reason", e.Msg)
		}
		return err
	}
	if err != nil {
		return err
	}
	log.Info("scheduled backup started", "checkpoint_id", cp.ID, "backups", len(cp.Items), "next_fire", next.Format(time.RFC3339))
	return nil
}
