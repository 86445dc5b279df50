// Package service holds the use cases of the backup service — protect a
// server, list, count, show and delete its backups — and the jobs that carry
// them out. It knows the rules of the CSBS reference (what is valid, which
// status allows what, which error code a refusal gets) but neither HTTP nor
// SQL: requests come in as Go values and refusals go out as *Error.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/store"
)

// Job kinds.
const (
	JobProtect = "protect"
	JobDelete  = "delete"
)

// Service carries out the use cases. It is safe for concurrent use.
type Service struct {
	store   store.Store
	compute compute.Driver
	repo    *repository.Repository
	notify  func()
	now     func() time.Time
	log     *slog.Logger
	quotas  Quotas
	meter   Meter

	gcKick      chan struct{}
	readers     readers // disks opened for reading through the API
	sharedDedup bool
	node        string
	gcMu        sync.Mutex
	lastGC      GCRun
	verifySem   chan struct{} // one verification run at a time
	verifyMu    sync.Mutex
	lastVerify  VerifyRun
}

// Config wires a Service.
type Config struct {
	Store   store.Store
	Compute compute.Driver
	Repo    *repository.Repository
	// Notify is called after a job was queued (wakes the job runner).
	Notify func()
	// Now is the clock; default time.Now.
	Now func() time.Time
	Log *slog.Logger
	// Quotas limit what each project may keep; nil means the defaults
	// (DefaultQuotaLimits for every project).
	Quotas *Quotas
	// Meter counts the bytes jobs move; nil counts nothing.
	Meter Meter
	// SharedDedup deduplicates across projects (repository.dedup shared);
	// by default each project is a dedup domain of its own.
	SharedDedup bool
	// Node is the node this process is (node.name; "" in a single-node
	// installation), reported with the clones kept on its disks.
	Node string
}

// New returns a Service.
func New(c Config) *Service {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Notify == nil {
		c.Notify = func() {}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Meter == nil {
		c.Meter = noMeter{}
	}
	return &Service{
		store: c.Store, compute: c.Compute, repo: c.Repo, notify: c.Notify, now: c.Now, log: c.Log,
		gcKick: make(chan struct{}, 1), quotas: c.Quotas.orDefault(), sharedDedup: c.SharedDedup, node: c.Node,
		meter: c.Meter, verifySem: make(chan struct{}, 1),
	}
}

func newID() string { return uuid.NewString() }

// now returns the service clock in UTC with microseconds, the precision the
// API shows and the store keeps.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// Generation changes after every write this service's store made; see
// store.Store.Generation.
func (s *Service) Generation() uint64 { return s.store.Generation() }

// CheckpointView is a checkpoint with the status its backups give it.
type CheckpointView struct {
	*store.Checkpoint
	Status string
	Items  []*store.Item
}

// CheckpointStatus derives a checkpoint's status from its backups':
// protecting while any is being backed up, error if any failed, available
// when all are, otherwise the status they share.
func CheckpointStatus(items []*store.Item) string {
	if len(items) == 0 {
		return store.StatusDeleted
	}
	var protecting, failed, deleting, restoring bool
	for _, it := range items {
		switch it.Status {
		case store.StatusWaitingProtect, store.StatusProtecting:
			protecting = true
		case store.StatusError:
			failed = true
		case store.StatusWaitingDelete, store.StatusDeleting:
			deleting = true
		case store.StatusWaitingRestore, store.StatusRestoring:
			restoring = true
		}
	}
	switch {
	case protecting:
		return store.StatusProtecting
	case failed:
		return store.StatusError
	case deleting:
		return store.StatusDeleting
	case restoring:
		return store.StatusRestoring
	}
	return store.StatusAvailable
}

// ProtectRequest is a request to back up one server now.
type ProtectRequest struct {
	BackupName   string
	Description  string
	Incremental  *bool // nil = incremental (full anyway for the first backup)
	ResourceType string
	Tags         []store.Tag
	ExtraInfo    json.RawMessage
}

// protectArgs are the arguments of a protect job.
type protectArgs struct {
	Incremental bool `json:"incremental"`
}

// Protect validates req, checks that the server can be backed up, and
// records the backup and its job in one transaction. The backup runs
// asynchronously; the returned checkpoint shows it waiting.
func (s *Service) Protect(ctx context.Context, projectID, serverID string, req ProtectRequest) (*CheckpointView, error) {
	if req.BackupName != "" {
		if err := ValidateName("backup_name", req.BackupName); err != nil {
			return nil, err
		}
	}
	if err := ValidateDescription("description", req.Description); err != nil {
		return nil, err
	}
	tags, err := NormalizeTags("tags", req.Tags)
	if err != nil {
		return nil, err
	}
	if req.ResourceType == "" {
		req.ResourceType = ResourceTypeServer
	}
	srv, err := s.protectable(ctx, projectID, serverID, req.ResourceType)
	if err != nil {
		return nil, err
	}

	now := s.clock()
	cp := &store.Checkpoint{
		ID:        newID(),
		ProjectID: projectID,
		PlanID:    "fake_" + newID(),
		PlanName:  "server protect plan for " + serverID,
		Resources: []store.Resource{{ID: srv.ID, Type: ResourceTypeServer, Name: srv.Name, ExtraInfo: json.RawMessage("{}")}},
		ExtraInfo: req.ExtraInfo,
		CreatedAt: now,
	}
	it := newItem(cp, srv, req.BackupName, req.Description, tags, now)
	it.Info.CreatedBy = "manual"
	incremental := req.Incremental == nil || *req.Incremental
	args, _ := json.Marshal(protectArgs{Incremental: incremental})
	job := &store.Job{
		ID: newID(), Kind: JobProtect, ProjectID: projectID, CheckpointID: cp.ID, ItemID: it.ID,
		PlanID: cp.PlanID, Args: args, Status: store.JobQueued, CreatedAt: now, Node: srv.Node,
	}
	it.Info.TaskID = job.ID

	err = s.store.InTx(ctx, func(tx store.Tx) error {
		if err := s.checkQuota(ctx, tx, projectID, 1); err != nil {
			return err
		}
		if err := tx.InsertCheckpoint(ctx, cp); err != nil {
			return err
		}
		if err := tx.InsertItem(ctx, it); err != nil {
			return err
		}
		return tx.InsertJob(ctx, job)
	})
	if errors.Is(err, store.ErrConflict) {
		return nil, errf(CodeServerInService, "Server (%s) is already in service: a backup of it is waiting or running; try again when it has finished", serverID)
	}
	if err != nil {
		return nil, fmt.Errorf("record backup: %w", err)
	}
	s.notify()
	return &CheckpointView{Checkpoint: cp, Status: CheckpointStatus([]*store.Item{it}), Items: []*store.Item{it}}, nil
}

// newItem builds the record of a backup of srv about to start.
func newItem(cp *store.Checkpoint, srv compute.Server, name, desc string, tags []store.Tag, now time.Time) *store.Item {
	id := newID()
	if name == "" {
		name = "manualbk_" + id[:4]
	}
	it := &store.Item{
		ID: id, CheckpointID: cp.ID, ProjectID: cp.ProjectID,
		Name: name, Description: desc,
		ResourceID: srv.ID, ResourceName: srv.Name, ResourceType: ResourceTypeServer, ResourceAZ: srv.AZ,
		Status: store.StatusWaitingProtect, CreatedAt: now, UpdatedAt: now, Tags: tags,
	}
	it.Info.BackupData = store.BackupData{VCPUs: srv.VCPUs, RAM: srv.RAM, PrivateIP: srv.PrivateIP}
	for _, v := range srv.Volumes {
		if v.Bootable {
			it.Info.BackupData.Disk = v.SizeGB()
		}
		it.Info.Volumes = append(it.Info.Volumes, store.VolumeBackup{
			ID: newID(), Name: name, SourceVolumeID: v.ID, SourceVolumeName: v.Name,
			SourceVolumeSize: v.SizeGB(), SourceSizeBytes: v.Size, Bootable: v.Bootable,
			Status: store.StatusWaitingProtect,
		})
	}
	return it
}

// protectable returns the server when it can be backed up, or the refusal
// the reference documents for why not.
func (s *Service) protectable(ctx context.Context, projectID, serverID, resourceType string) (compute.Server, error) {
	if resourceType != ResourceTypeServer {
		return compute.Server{}, errf(CodeTypeNotProtectable, "Resource (%s) type (%s) is not support protection: only %s is supported", serverID, resourceType, ResourceTypeServer)
	}
	srv, err := s.compute.Server(ctx, projectID, serverID)
	if errors.Is(err, compute.ErrNotFound) {
		return srv, errf(CodeServerNotFound, "server do not exist: no server %s in project %s", serverID, projectID)
	}
	if err != nil {
		return srv, fmt.Errorf("look up server %s: %w", serverID, err)
	}
	if !srv.Protectable() {
		return srv, errf(CodeStatusNotAllowed, "Server (%s) status (%s) is not allowed to protect: it must be ACTIVE or SHUTOFF", serverID, srv.Status)
	}
	if len(srv.Volumes) == 0 {
		return srv, errf(CodeNoVolume, "No volume attached to the server (%s) for protect.", serverID)
	}
	for _, v := range srv.Volumes {
		if v.Shareable {
			return srv, errf(CodeShareableVolume, "Volume (%s) attached to server (%s) is shareable volume.", v.ID, serverID)
		}
	}
	if err := s.notRestoring(ctx, projectID, srv.ID); err != nil { // restore.go
		return srv, err
	}
	return srv, nil
}

// ProtectableCheck is one entry of a check_protectable request.
type ProtectableCheck struct {
	ResourceID   string
	ResourceType string
}

// ProtectableResult answers one ProtectableCheck.
type ProtectableResult struct {
	ResourceID   string
	ResourceType string
	Result       bool
	ErrorCode    string
	ErrorMsg     string
}

// CheckProtectable tells for each resource whether it can be backed up now,
// and if not, which refusal a protect request would get.
func (s *Service) CheckProtectable(ctx context.Context, projectID string, checks []ProtectableCheck) ([]ProtectableResult, error) {
	out := make([]ProtectableResult, 0, len(checks))
	for _, c := range checks {
		r := ProtectableResult{ResourceID: c.ResourceID, ResourceType: c.ResourceType, Result: true}
		_, err := s.protectable(ctx, projectID, c.ResourceID, c.ResourceType)
		if e, ok := AsError(err); ok {
			r.Result, r.ErrorCode, r.ErrorMsg = false, e.Code, e.Msg
		} else if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Item returns a backup of the project. As existing clients need, the id of
// a checkpoint that holds exactly one backup resolves to that backup.
func (s *Service) Item(ctx context.Context, projectID, id string) (*store.Item, error) {
	it, err := s.store.GetItem(ctx, projectID, id)
	if err == nil {
		return it, s.mark(ctx, []*store.Item{it})
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	items, err := s.store.ItemsOfCheckpoint(ctx, projectID, id)
	if err == nil && len(items) == 1 {
		return items[0], s.mark(ctx, items)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return nil, errf(CodeItemNotFound, "Checkpoint_item (%s) is not found.", id)
}

// Items lists the backups that match f.
func (s *Service) Items(ctx context.Context, projectID string, f store.ItemFilter) ([]*store.Item, error) {
	items, err := s.store.ListItems(ctx, projectID, f)
	if errors.Is(err, store.ErrBadMarker) {
		return nil, InvalidParam("marker", "no backup %s to continue after", f.Marker)
	}
	if err != nil {
		return nil, err
	}
	return items, s.mark(ctx, items)
}

// mark sets what backups report without storing it: the node a job waits
// for, the last verification.
func (s *Service) mark(ctx context.Context, items []*store.Item) error {
	if err := s.markNodeWaits(ctx, items); err != nil {
		return err
	}
	return s.markVerified(ctx, items)
}

// CountItems counts the backups that match f.
func (s *Service) CountItems(ctx context.Context, projectID string, f store.ItemFilter) (int, error) {
	return s.store.CountItems(ctx, projectID, f)
}

// DeleteCheckpoint starts deleting the backups of a checkpoint (all of them,
// or those in itemIDs). It returns at once; each backup goes waiting_delete
// → deleting → gone. Backups already being deleted are left alone; when
// every one is, the request is refused with CSBS.2003 ("item in
// executing"), which the cloud's Terraform provider reads as "still
// deleting" in its delete loop. A backup being created or restored refuses
// the whole request too. A refused request changes nothing.
func (s *Service) DeleteCheckpoint(ctx context.Context, projectID, checkpointID string, itemIDs []string) error {
	var queued int
	err := s.store.InTx(ctx, func(tx store.Tx) error {
		items, err := tx.ItemsOfCheckpoint(ctx, projectID, checkpointID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if len(items) == 0 {
			return errf(CodeItemNotFound, "checkpoint %s is not found, or all its backups are deleted", checkpointID)
		}
		targets := items
		if len(itemIDs) > 0 {
			byID := map[string]*store.Item{}
			for _, it := range items {
				byID[it.ID] = it
			}
			targets = targets[:0:0]
			for _, id := range itemIDs {
				it, ok := byID[id]
				if !ok {
					return errf(CodeItemNotFound, "Checkpoint_item (%s) is not found in checkpoint %s.", id, checkpointID)
				}
				targets = append(targets, it)
			}
		}
		for _, it := range targets {
			switch it.Status {
			case store.StatusWaitingProtect, store.StatusProtecting, store.StatusWaitingRestore, store.StatusRestoring:
				return errf(CodeItemExecuting, "item in executing: backup %s is %s; try again when it has finished", it.ID, it.Status)
			}
		}
		now := s.clock()
		for _, it := range targets {
			ok, err := tx.SetItemStatus(ctx, it.ID, []string{store.StatusAvailable, store.StatusError}, store.StatusWaitingDelete)
			if err != nil {
				return err
			}
			if !ok {
				continue // already being deleted (or gone meanwhile)
			}
			j := &store.Job{
				ID: newID(), Kind: JobDelete, ProjectID: projectID, CheckpointID: checkpointID, ItemID: it.ID,
				Status: store.JobQueued, CreatedAt: now,
			}
			if err := tx.InsertJob(ctx, j); err != nil {
				return err
			}
			queued++
		}
		if queued == 0 {
			return errf(CodeItemExecuting, "item in executing: the backups of checkpoint %s are already being deleted; wait until they are gone (404)", checkpointID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if queued > 0 {
		s.notify()
	}
	return nil
}
