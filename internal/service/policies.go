package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/retention"
	"github.com/csbs/csbs/internal/schedule"
	"github.com/csbs/csbs/internal/store"
)

// Limits of policies.
const (
	// DefaultMaxPolicies is the per-project policy limit when none is
	// configured: the user guide's "a maximum of 32 backup policies".
	DefaultMaxPolicies = 32
	// maxPolicyServers is the user guide's "a maximum of 64 ECSs can be
	// associated with a backup policy".
	maxPolicyServers = 64
	// maxLongTerm bounds day/week/month/year_backups (user guide: 0–100).
	maxLongTerm = 100
	// maxRetention bounds max_backups and retention_duration_days.
	maxRetention = 99999
	// OperationBackup is the only operation type.
	OperationBackup = "backup"
	// triggerName is the name every trigger gets, as in the reference.
	triggerName = "default"
	// lateLimit is how late a fire time may still run (after a time no
	// process ran); later ones are skipped.
	lateLimit = time.Hour
)

// PolicySuspended is the status of every policy. The reference describes
// enabled/disabled, but the real cloud answers "suspended" (the plan status
// of OpenStack Karbor, which it runs) whatever the schedule says: its
// create example, the SDK's recorded fixtures and the Terraform provider's
// create wait (pending "creating", target "suspended") all show it, and
// any other value fails terraform apply. Whether a schedule runs is
// scheduled_operations[].enabled.
const PolicySuspended = "suspended"

// PolicyStatus is the status a policy shows: always PolicySuspended.
func PolicyStatus(*store.Policy) string { return PolicySuspended }

// PolicyRequest is a policy create or update request. Nil fields were not
// given: create requires name, provider_id, resources and
// scheduled_operations; update changes only what is given.
type PolicyRequest struct {
	Name        *string
	Description *string
	ProviderID  *string
	Parameters  json.RawMessage // an object, or nil
	Resources   *[]store.Resource
	Operations  *[]OperationRequest
	Tags        *[]store.Tag
}

// OperationRequest is a scheduled operation of a PolicyRequest. On update
// ID names the operation changed.
type OperationRequest struct {
	ID            string
	Name          *string
	Description   *string
	Enabled       *bool
	OperationType *string
	// Definition replaces the operation's retention when given.
	Definition *DefinitionRequest
	// Pattern is the trigger's properties.pattern, when a trigger is given.
	Pattern *string
}

// DefinitionRequest is an operation_definition.
type DefinitionRequest struct {
	store.OperationDefinition
	ProviderID string // "" when not given
}

// CreatePolicy validates req and stores the policy.
func (s *Service) CreatePolicy(ctx context.Context, projectID string, req PolicyRequest) (*store.Policy, error) {
	switch {
	case req.Name == nil:
		return nil, InvalidParam("name", "missing; a policy needs a name")
	case req.ProviderID == nil:
		return nil, InvalidParam("provider_id", "missing; it is %s", ProviderID)
	case req.Resources == nil:
		return nil, InvalidParam("resources", "missing; give a list of servers (it may be empty)")
	case req.Operations == nil:
		return nil, InvalidParam("scheduled_operations", "missing; give one scheduled operation")
	}
	if *req.ProviderID != ProviderID {
		return nil, InvalidParam("provider_id", "%q is not the CSBS provider id %s", clipID(*req.ProviderID), ProviderID)
	}
	now := s.clock()
	p := &store.Policy{ID: newID(), ProjectID: projectID, Parameters: req.Parameters, CreatedAt: now, UpdatedAt: now}
	if err := s.applyPolicy(ctx, p, req, now); err != nil {
		return nil, err
	}
	err := s.store.InTx(ctx, func(tx store.Tx) error {
		n, err := tx.CountPolicies(ctx, projectID)
		if err != nil {
			return err
		}
		if err := s.CheckPolicyQuota(projectID, n, 1); err != nil {
			return err
		}
		return tx.InsertPolicy(ctx, p)
	})
	if errors.Is(err, store.ErrConflict) {
		return nil, errf(CodeServerInPolicy, "Server is already in service: a server of the request was just associated with another backup policy; disassociate it there first")
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// applyPolicy validates the fields req gives and writes them into p.
func (s *Service) applyPolicy(ctx context.Context, p *store.Policy, req PolicyRequest, now time.Time) error {
	if req.Name != nil {
		if err := ValidateName("name", *req.Name); err != nil {
			return err
		}
		p.Name = *req.Name
	}
	if req.Description != nil {
		if err := ValidateDescription("description", *req.Description); err != nil {
			return err
		}
		p.Description = *req.Description
	}
	if req.ProviderID != nil && *req.ProviderID != ProviderID {
		return InvalidParam("provider_id", "%q is not the CSBS provider id %s", clipID(*req.ProviderID), ProviderID)
	}
	if req.Parameters != nil {
		p.Parameters = req.Parameters
	}
	if req.Resources != nil {
		res, err := s.policyResources(ctx, p, *req.Resources)
		if err != nil {
			return err
		}
		p.Resources = res
	}
	if req.Operations != nil {
		ops, err := s.policyOperations(p, *req.Operations, now)
		if err != nil {
			return err
		}
		p.Operations = ops
	}
	if req.Tags != nil {
		tags, err := NormalizeTags("tags", *req.Tags)
		if err != nil {
			return err
		}
		p.Tags = tags
	}
	return nil
}

// policyResources checks the servers of a policy: of type
// OS::Nova::Server, existing in the project, listed once, at most 64, and
// not associated with another policy.
func (s *Service) policyResources(ctx context.Context, p *store.Policy, res []store.Resource) ([]store.Resource, error) {
	if len(res) > maxPolicyServers {
		return nil, InvalidParam("resources", "lists %d servers; a policy may have at most %d", len(res), maxPolicyServers)
	}
	out := make([]store.Resource, 0, len(res))
	seen := map[string]bool{}
	for i, r := range res {
		switch {
		case r.ID == "":
			return nil, InvalidParam("resources", "entry %d has no id", i+1)
		case r.Type == "":
			return nil, InvalidParam("resources", "entry %d (%s) has no type; it is %s", i+1, clipID(r.ID), ResourceTypeServer)
		case r.Type != ResourceTypeServer:
			return nil, errf(CodeTypeNotProtectable, "Resource (%s) type (%s) is not support protection: only %s is supported", clipID(r.ID), clipID(r.Type), ResourceTypeServer)
		case seen[r.ID]:
			return nil, InvalidParam("resources", "server %s is listed twice", r.ID)
		}
		seen[r.ID] = true
		srv, err := s.compute.Server(ctx, p.ProjectID, r.ID)
		if errors.Is(err, compute.ErrNotFound) {
			return nil, errf(CodeServerNotFound, "server do not exist: no server %s in project %s", clipID(r.ID), p.ProjectID)
		}
		if err != nil {
			return nil, fmt.Errorf("look up server %s: %w", r.ID, err)
		}
		owner, err := s.store.PolicyOfResource(ctx, p.ProjectID, r.ID)
		switch {
		case err == nil && owner != p.ID:
			return nil, errf(CodeServerInPolicy, "Server (%s) is already in service: it is associated with backup policy %s; disassociate it there first", r.ID, owner)
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
		if r.Name == "" {
			r.Name = srv.Name
		}
		if len(r.ExtraInfo) == 0 || string(r.ExtraInfo) == "null" {
			r.ExtraInfo = json.RawMessage("{}")
		}
		out = append(out, r)
	}
	return out, nil
}

// policyOperations applies the scheduled operations of a request: on
// create (p has none) exactly one, complete; on update each names an
// operation of p by id and changes what it gives.
func (s *Service) policyOperations(p *store.Policy, reqs []OperationRequest, now time.Time) ([]store.ScheduledOperation, error) {
	creating := len(p.Operations) == 0
	if creating && len(reqs) != 1 {
		return nil, InvalidParam("scheduled_operations", "has %d entries; a policy has exactly one scheduled operation", len(reqs))
	}
	ops := append([]store.ScheduledOperation(nil), p.Operations...)
	for _, r := range reqs {
		if creating {
			op, err := buildOperation(nil, r, now)
			if err != nil {
				return nil, err
			}
			ops = append(ops, op)
			continue
		}
		if r.ID == "" {
			return nil, InvalidParam("scheduled_operations.id", "missing; name the scheduled operation to change")
		}
		i := 0
		for i < len(ops) && ops[i].ID != r.ID {
			i++
		}
		if i == len(ops) {
			return nil, InvalidParam("scheduled_operations.id", "policy %s has no scheduled operation %s", p.ID, clipID(r.ID))
		}
		op, err := buildOperation(&ops[i], r, now)
		if err != nil {
			return nil, err
		}
		ops[i] = op
	}
	return ops, nil
}

// buildOperation returns prev (nil on create) changed by r, validated,
// with its next fire time computed when it is enabled.
func buildOperation(prev *store.ScheduledOperation, r OperationRequest, now time.Time) (store.ScheduledOperation, error) {
	var op store.ScheduledOperation
	if prev != nil {
		op = *prev
	} else {
		switch {
		case r.Enabled == nil:
			return op, InvalidParam("scheduled_operations.enabled", "missing; true schedules backups, false only allows executing the policy by hand")
		case r.OperationType == nil:
			return op, InvalidParam("scheduled_operations.operation_type", "missing; it is %s", OperationBackup)
		case r.Definition == nil:
			return op, InvalidParam("scheduled_operations.operation_definition", "missing; give at least an empty object")
		case r.Pattern == nil:
			return op, InvalidParam("scheduled_operations.trigger", "missing; give trigger.properties.pattern")
		}
		op = store.ScheduledOperation{ID: newID(), TriggerID: newID(), TriggerName: triggerName}
	}
	if r.Name != nil {
		if *r.Name != "" { // the name is optional
			if err := ValidateName("scheduled_operations.name", *r.Name); err != nil {
				return op, err
			}
		}
		op.Name = *r.Name
	}
	if r.Description != nil {
		if err := ValidateDescription("scheduled_operations.description", *r.Description); err != nil {
			return op, err
		}
		op.Description = *r.Description
	}
	if r.OperationType != nil {
		if *r.OperationType != OperationBackup {
			return op, InvalidParam("scheduled_operations.operation_type", "%q is not supported; it is %s", clipID(*r.OperationType), OperationBackup)
		}
		op.OperationType = *r.OperationType
	}
	if op.OperationType == "" {
		op.OperationType = OperationBackup
	}
	if r.Definition != nil {
		if err := validateDefinition(*r.Definition); err != nil {
			return op, err
		}
		op.Definition = r.Definition.OperationDefinition
	}
	wasEnabled := prev != nil && prev.Enabled
	if r.Enabled != nil {
		op.Enabled = *r.Enabled
	}
	newPattern := false
	if r.Pattern != nil && (prev == nil || *r.Pattern != prev.Pattern) {
		if _, err := schedule.Parse(*r.Pattern); err != nil {
			return op, InvalidParam("scheduled_operations.trigger.properties.pattern", "%v", err)
		}
		op.Pattern = *r.Pattern
		op.StartTime = now
		newPattern = true
	}
	switch {
	case !op.Enabled:
		op.NextFire = nil
	case newPattern || !wasEnabled || op.NextFire == nil:
		sched, err := schedule.Parse(op.Pattern)
		if err != nil {
			return op, InvalidParam("scheduled_operations.trigger.properties.pattern", "%v", err)
		}
		next := sched.Next(now)
		op.NextFire = &next
	}
	return op, nil
}

// validateDefinition checks an operation_definition: max_backups and
// retention_duration_days -1 or 0–99999; the long-term counts 0–100 and
// only with a timezone of the form UTC+08:00 (which needs them).
func validateDefinition(d DefinitionRequest) error {
	const f = "scheduled_operations.operation_definition."
	for _, v := range []struct {
		name string
		n    *int
	}{{"max_backups", d.MaxBackups}, {"retention_duration_days", d.RetentionDurationDays}} {
		if v.n != nil && (*v.n < -1 || *v.n > maxRetention) {
			return InvalidParam(f+v.name, "%d is out of range; use -1 (no limit) or 0 to %d", *v.n, maxRetention)
		}
	}
	longTerm := false
	for _, v := range []struct {
		name string
		n    *int
	}{{"day_backups", d.DayBackups}, {"week_backups", d.WeekBackups}, {"month_backups", d.MonthBackups}, {"year_backups", d.YearBackups}} {
		if v.n == nil {
			continue
		}
		if *v.n < 0 || *v.n > maxLongTerm {
			return InvalidParam(f+v.name, "%d is out of range; use 0 to %d", *v.n, maxLongTerm)
		}
		longTerm = true
	}
	switch {
	case longTerm && d.Timezone == "":
		return InvalidParam(f+"timezone", "missing; it is required with day_backups, week_backups, month_backups or year_backups (for example UTC+08:00)")
	case !longTerm && d.Timezone != "":
		return InvalidParam(f+"timezone", "is set without day_backups, week_backups, month_backups or year_backups, which it applies to")
	case d.Timezone != "":
		if _, err := retention.ParseZone(d.Timezone); err != nil {
			return InvalidParam(f+"timezone", "%v", err)
		}
	}
	if d.ProviderID != "" && d.ProviderID != ProviderID {
		return InvalidParam(f+"provider_id", "%q is not the CSBS provider id %s", clipID(d.ProviderID), ProviderID)
	}
	return nil
}

// Policy returns a policy of the project.
func (s *Service) Policy(ctx context.Context, projectID, id string) (*store.Policy, error) {
	p, err := s.store.GetPolicy(ctx, projectID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errf(CodePlanNotFound, "plan not found: no backup policy %s", clipID(id))
	}
	return p, err
}

// Policies lists the policies that match f.
func (s *Service) Policies(ctx context.Context, projectID string, f store.PolicyFilter) ([]*store.Policy, error) {
	ps, err := s.store.ListPolicies(ctx, projectID, f)
	switch {
	case errors.Is(err, store.ErrBadMarker):
		return nil, InvalidParam("marker", "no backup policy %s to continue after", clipID(f.Marker))
	case errors.Is(err, store.ErrBadSortKey):
		return nil, InvalidParam("sort", "%v", err)
	}
	return ps, err
}

// UpdatePolicy changes what req gives of a policy: name, description,
// resources (the new list replaces the old: servers are associated and
// disassociated), tags, and scheduled operations by id (enabled, name,
// description, trigger pattern, and the whole operation_definition).
func (s *Service) UpdatePolicy(ctx context.Context, projectID, id string, req PolicyRequest) (*store.Policy, error) {
	p, err := s.Policy(ctx, projectID, id)
	if err != nil {
		return nil, err
	}
	if err := s.applyPolicy(ctx, p, req, s.clock()); err != nil {
		return nil, err
	}
	err = s.store.InTx(ctx, func(tx store.Tx) error { return tx.UpdatePolicy(ctx, p) })
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errf(CodePlanNotFound, "plan not found: backup policy %s was deleted", clipID(id))
	case errors.Is(err, store.ErrConflict):
		return nil, errf(CodeServerInPolicy, "Server is already in service: a server of the request was just associated with another backup policy; disassociate it there first")
	case err != nil:
		return nil, err
	}
	return s.Policy(ctx, projectID, id)
}

// DeletePolicy removes a policy; its backups stay (they keep its id as
// policy_id).
func (s *Service) DeletePolicy(ctx context.Context, projectID, id string) error {
	err := s.store.InTx(ctx, func(tx store.Tx) error { return tx.DeletePolicy(ctx, projectID, id) })
	if errors.Is(err, store.ErrNotFound) {
		return errf(CodePlanNotFound, "plan not found: no backup policy %s", clipID(id))
	}
	return err
}

// ExecuteRequest is a request to run a policy now.
type ExecuteRequest struct {
	PlanID      string
	AutoTrigger bool
	Resources   []string // a subset of the policy's servers; empty = all
}

// ExecutePolicy backs up the servers of a policy now: one checkpoint with
// one backup per server that can be backed up. Servers that cannot (gone,
// in a bad state, already being backed up) are left out; with none left
// the request is refused.
func (s *Service) ExecutePolicy(ctx context.Context, projectID string, req ExecuteRequest) (*CheckpointView, error) {
	p, err := s.Policy(ctx, projectID, req.PlanID)
	if err != nil {
		return nil, err
	}
	servers := make([]string, 0, len(p.Resources))
	for _, r := range p.Resources {
		servers = append(servers, r.ID)
	}
	// An empty list means the same as none (the SDK sends [] for an empty
	// slice): all the policy's servers.
	if len(req.Resources) > 0 {
		in := map[string]bool{}
		for _, id := range servers {
			in[id] = true
		}
		servers = servers[:0]
		for _, id := range req.Resources {
			if !in[id] {
				return nil, InvalidParam("resources", "server %s is not associated with backup policy %s", clipID(id), p.ID)
			}
			servers = append(servers, id)
		}
	}
	if len(servers) == 0 {
		return nil, errf(CodePlanNoResource, "plan has no resource backup: backup policy %s has no servers to back up; associate servers with it", p.ID)
	}
	if err := s.checkNotExecuting(ctx, p); err != nil {
		return nil, err
	}
	return s.startPolicyBackup(ctx, p, servers, req.AutoTrigger, nil)
}

// checkNotExecuting refuses when backups of the policy are waiting or
// running: CSBS.6030 when they are automatic, CSBS.1001 when manual.
func (s *Service) checkNotExecuting(ctx context.Context, p *store.Policy) error {
	items, err := s.store.ListItems(ctx, p.ProjectID, store.ItemFilter{PolicyID: p.ID,
		Statuses: []string{store.StatusWaitingProtect, store.StatusProtecting}, Limit: 1})
	switch {
	case err != nil:
		return err
	case len(items) == 0:
		return nil
	case items[0].Info.AutoTrigger:
		return errf(CodeAutoPlanExecuting, "auto plan executing: an automatic backup of policy %s is running; execute it again when it has finished", p.ID)
	}
	return errf(CodeManualExecuting, "The policy is executing backup: a manual backup of policy %s is running; execute it again when it has finished", p.ID)
}

// errNotMine ends a scheduler transaction that another process (or a
// policy change) got to first.
var errNotMine = errors.New("fire time taken")

// startPolicyBackup records one checkpoint holding a backup (and its job)
// of each of servers that can be backed up, in one transaction that first
// runs claim (when not nil; a false from it rolls everything back with
// errNotMine). Backups of a policy carry its id and its tags; automatic
// ones are named autobk_…, created_by auto, and are pruned by the policy's
// retention after they finish.
func (s *Service) startPolicyBackup(ctx context.Context, p *store.Policy, servers []string, auto bool, claim func(tx store.Tx, checkpointID string) (bool, error)) (*CheckpointView, error) {
	var srvs []compute.Server
	var skipped []string
	for _, id := range servers {
		srv, err := s.protectable(ctx, p.ProjectID, id, ResourceTypeServer)
		if e, ok := AsError(err); ok {
			skipped = append(skipped, e.Msg)
			continue
		}
		if err != nil {
			return nil, err
		}
		srvs = append(srvs, srv)
	}
	if len(skipped) > 0 {
		s.log.Warn("policy backup leaves out servers that cannot be backed up", "policy_id", p.ID, "reasons", skipped)
	}
	if len(srvs) == 0 {
		return nil, errf(CodePlanNoResource, "plan has no resource backup: no server of backup policy %s can be backed up now (%d left out; see the service log)", p.ID, len(skipped))
	}

	now := s.clock()
	by := "manual"
	if auto {
		by = "auto"
	}
	extra, _ := json.Marshal(map[string]string{"created_by": by})
	cp := &store.Checkpoint{ID: newID(), ProjectID: p.ProjectID, PlanID: p.ID, PlanName: p.Name, ExtraInfo: extra, CreatedAt: now}
	args, _ := json.Marshal(protectArgs{Incremental: true})
	var items []*store.Item
	var jobs []*store.Job
	for _, srv := range srvs {
		cp.Resources = append(cp.Resources, store.Resource{ID: srv.ID, Type: ResourceTypeServer, Name: srv.Name, ExtraInfo: json.RawMessage("{}")})
		it := newItem(cp, srv, "", "", p.Tags, now)
		if auto {
			it.Name = "autobk_" + it.ID[:4]
			for i := range it.Info.Volumes {
				it.Info.Volumes[i].Name = it.Name
			}
		}
		it.PolicyID = p.ID
		it.Info.AutoTrigger = auto
		it.Info.CreatedBy = by
		j := &store.Job{ID: newID(), Kind: JobProtect, ProjectID: p.ProjectID, CheckpointID: cp.ID, ItemID: it.ID,
			PlanID: p.ID, Args: args, Status: store.JobQueued, CreatedAt: now, Node: srv.Node}
		it.Info.TaskID = j.ID
		items, jobs = append(items, it), append(jobs, j)
	}

	var started []*store.Item
	err := s.store.InTx(ctx, func(tx store.Tx) error {
		started = started[:0]
		if claim != nil {
			ok, err := claim(tx, cp.ID)
			if err != nil {
				return err
			}
			if !ok {
				return errNotMine
			}
		}
		if err := s.checkQuota(ctx, tx, p.ProjectID, len(items)); err != nil {
			return err
		}
		if err := tx.InsertCheckpoint(ctx, cp); err != nil {
			return err
		}
		var busy []string
		for i, it := range items {
			err := tx.InsertItem(ctx, it)
			if errors.Is(err, store.ErrConflict) {
				busy = append(busy, it.ResourceID)
				continue // a backup of this server is running: it waits for the next cycle
			}
			if err != nil {
				return err
			}
			if err := tx.InsertJob(ctx, jobs[i]); err != nil {
				return err
			}
			started = append(started, it)
		}
		if len(started) == 0 {
			return errf(CodeServerInService, "Server (%s) is already in service: every server of backup policy %s is being backed up; try again when the backups have finished", busy[0], p.ID)
		}
		if len(busy) > 0 {
			s.log.Warn("policy backup leaves out servers already being backed up", "policy_id", p.ID, "servers", busy)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.notify()
	return &CheckpointView{Checkpoint: cp, Status: CheckpointStatus(started), Items: started}, nil
}

func clipID(s string) string {
	if len(s) > 70 {
		return s[:70] + "…"
	}
	return s
}
