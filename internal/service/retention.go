package service

import (
	"context"
	"errors"

	"github.com/csbs/csbs/internal/retention"
	"github.com/csbs/csbs/internal/store"
)

// retainAfter is the protect job handler that applies the policy's
// retention after an automatic backup finished.
type retainAfter struct{ protectJob }

func (h retainAfter) Run(ctx context.Context, j *store.Job) error {
	if err := h.protectJob.Run(ctx, j); err != nil {
		return err
	}
	s := h.s
	it, err := s.store.GetItemAnyProject(ctx, j.ItemID)
	if err != nil || it.Status != store.StatusAvailable || it.PolicyID == "" || !it.Info.AutoTrigger {
		return nil
	}
	if _, err := s.ApplyRetention(ctx, it.ProjectID, it.PolicyID, it.ResourceID); err != nil {
		s.log.ErrorContext(ctx, "retention after backup", "item_id", it.ID, "policy_id", it.PolicyID, "err", err)
	}
	return nil
}

// retentionRule is the retention of a policy: that of its (only) backup
// operation.
func retentionRule(p *store.Policy) (retention.Rule, bool) {
	for _, op := range p.Operations {
		if op.OperationType != OperationBackup {
			continue
		}
		d := op.Definition
		r := retention.Rule{Permanent: d.Permanent != nil && *d.Permanent, MaxBackups: -1, RetentionDays: -1}
		if d.MaxBackups != nil {
			r.MaxBackups = *d.MaxBackups
		}
		if d.RetentionDurationDays != nil {
			r.RetentionDays = *d.RetentionDurationDays
		}
		for _, v := range []struct {
			dst *int
			src *int
		}{{&r.Day, d.DayBackups}, {&r.Week, d.WeekBackups}, {&r.Month, d.MonthBackups}, {&r.Year, d.YearBackups}} {
			if v.src != nil {
				*v.dst = *v.src
			}
		}
		if d.Timezone != "" {
			r.Zone, _ = retention.ParseZone(d.Timezone) // validated when stored
		}
		return r, true
	}
	return retention.Rule{}, false
}

// ApplyRetention deletes the automatic backups of a server made by a policy
// that the policy's retention no longer keeps, through the ordinary delete
// path (waiting_delete and a delete job). Manual backups are never
// touched; a backup being restored is left for the next run. It returns
// how many deletes it started.
func (s *Service) ApplyRetention(ctx context.Context, projectID, policyID, serverID string) (int, error) {
	p, err := s.store.GetPolicy(ctx, projectID, policyID)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil // its backups are kept once the policy is gone
	}
	if err != nil {
		return 0, err
	}
	rule, ok := retentionRule(p)
	if !ok {
		return 0, nil
	}
	items, err := s.store.ListItems(ctx, projectID, store.ItemFilter{PolicyID: policyID, ResourceID: serverID})
	if err != nil {
		return 0, err
	}
	var bs []retention.Backup
	for _, it := range items {
		if !it.Info.AutoTrigger {
			continue
		}
		switch it.Status {
		case store.StatusAvailable, store.StatusWaitingRestore, store.StatusRestoring:
			bs = append(bs, retention.Backup{ID: it.ID, CreatedAt: it.CreatedAt})
		}
	}
	_, drop := retention.Keep(rule, bs, s.clock())
	if len(drop) == 0 {
		return 0, nil
	}
	byID := map[string]*store.Item{}
	for _, it := range items {
		byID[it.ID] = it
	}
	n := 0
	err = s.store.InTx(ctx, func(tx store.Tx) error {
		n = 0
		now := s.clock()
		for _, b := range drop {
			it := byID[b.ID]
			// Only from available: a backup that began a restore since
			// stays until a later run.
			ok, err := tx.SetItemStatus(ctx, it.ID, []string{store.StatusAvailable}, store.StatusWaitingDelete)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			j := &store.Job{ID: newID(), Kind: JobDelete, ProjectID: projectID, CheckpointID: it.CheckpointID,
				ItemID: it.ID, PlanID: policyID, Status: store.JobQueued, CreatedAt: now}
			if err := tx.InsertJob(ctx, j); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.log.Info("retention deletes backups", "policy_id", policyID, "server_id", serverID, "backups", n)
		s.notify()
	}
	return n, nil
}

// SweepRetention applies the retention of every policy of every project to
// each of its servers.
func (s *Service) SweepRetention(ctx context.Context) error {
	ps, err := s.store.ListPolicies(ctx, "", store.PolicyFilter{AllTenants: true})
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ps {
		for _, r := range p.Resources {
			if _, err := s.ApplyRetention(ctx, p.ProjectID, p.ID, r.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
