package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/jobs"
	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/store"
)

// JobRestore is the job kind of a restore.
const JobRestore = "restore"

// The refusals of a restore (error_codes.txt). All are 400: the reference
// gives CSBS.6023 a 500, but it is a refusal of the request, not a fault
// of the service, and clients treat a 500 as the latter.
const (
	CodeItemNotAvailable   = "CSBS.4000" // the backup is not available
	CodeTypeNotRestorable  = "CSBS.6013" // resource_type of check_restorable
	CodeVolumeNotOnTarget  = "CSBS.6014"
	CodeServerRestoring    = "CSBS.6015"
	CodeTargetNotAllowed   = "CSBS.6016" // target server status does not allow a restore
	CodeBackupNotInItem    = "CSBS.6017"
	CodePartialRestore     = "CSBS.6018"
	CodeNoVolumeRestore    = "CSBS.6020"
	CodeShareableTarget    = "CSBS.6021"
	CodeDataToSystemVolume = "CSBS.6023"
	CodeTargetTooSmall     = "CSBS.6024"
)

// Values of Restore.ResourcesStatus.
const (
	ResourceRestoring = "restoring"
	ResourceAvailable = "available"
	ResourceError     = "error"
)

// RestoreRequest is a request to restore a backup onto a server.
type RestoreRequest struct {
	CheckpointID string // "" = the backup's own
	ItemID       string // the backup; a checkpoint id holding one backup also resolves
	ServerID     string // the target server
	PowerOn      bool
	// Volumes maps every disk backup of the backup to a disk of the target.
	// Empty: csbs maps them itself when that is unambiguous (see
	// defaultMapping).
	Volumes []store.VolumeMapping
	Target  string // restore_target, kept as given
}

// RestorableCheck is one entry of a check_restorable request.
type RestorableCheck struct {
	ItemID       string
	ResourceID   string
	ResourceType string
	Volumes      []store.VolumeMapping
}

// RestorableResult answers one RestorableCheck.
type RestorableResult struct {
	ResourceID   string
	ResourceType string
	Result       bool
	ErrorCode    string
	ErrorMsg     string
}

// restorePlan is a checked restore: the backup, the target server and
// the volume mapping.
type restorePlan struct {
	item    *store.Item
	server  compute.Server
	volumes []store.VolumeMapping
}

// Restore checks req, then records the restore and its job in one
// transaction and moves the backup to waiting_restore. A refusal changes
// nothing. The restore runs asynchronously; the returned record is
// in_progress.
func (s *Service) Restore(ctx context.Context, projectID string, req RestoreRequest) (*store.Restore, error) {
	p, err := s.planRestore(ctx, projectID, req.ItemID, req.ServerID, ResourceTypeServer, req.Volumes)
	if err != nil {
		return nil, err
	}
	if req.CheckpointID != "" && req.CheckpointID != p.item.CheckpointID {
		return nil, errf(CodeItemNotFound, "Checkpoint_item (%s) is not found in checkpoint %s.", p.item.ID, req.CheckpointID)
	}
	now := s.clock()
	r := &store.Restore{
		ID: newID(), ProjectID: projectID, CheckpointID: p.item.CheckpointID, ItemID: p.item.ID,
		ServerID: p.server.ID, Volumes: p.volumes, PowerOn: req.PowerOn, Target: req.Target,
		Status: store.RestoreInProgress, ResourcesStatus: resourcesStatus(p.server.ID, p.volumes, ResourceRestoring),
		CreatedAt: now, UpdatedAt: now,
	}
	job := &store.Job{
		ID: newID(), Kind: JobRestore, ProjectID: projectID, CheckpointID: r.CheckpointID, ItemID: r.ItemID,
		RestoreID: r.ID, Status: store.JobQueued, CreatedAt: now, Node: p.server.Node,
	}
	r.JobID = job.ID
	err = s.store.InTx(ctx, func(tx store.Tx) error {
		ok, err := tx.SetItemStatus(ctx, p.item.ID, []string{store.StatusAvailable}, store.StatusWaitingRestore)
		if err != nil {
			return err
		}
		if !ok {
			return notAvailable(p.item.ID, "no longer available")
		}
		if err := tx.InsertRestore(ctx, r); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return serverRestoring(p.server.ID)
			}
			return err
		}
		return tx.InsertJob(ctx, job)
	})
	if err != nil {
		if _, ok := AsError(err); ok {
			return nil, err
		}
		return nil, fmt.Errorf("record restore: %w", err)
	}
	s.notify()
	return r, nil
}

// CheckRestorable tells for each check whether the backup can be restored
// onto the resource now, and if not, which refusal a restore would get.
func (s *Service) CheckRestorable(ctx context.Context, projectID string, checks []RestorableCheck) ([]RestorableResult, error) {
	out := make([]RestorableResult, 0, len(checks))
	for _, c := range checks {
		r := RestorableResult{ResourceID: c.ResourceID, ResourceType: c.ResourceType, Result: true}
		_, err := s.planRestore(ctx, projectID, c.ItemID, c.ResourceID, c.ResourceType, c.Volumes)
		if e, ok := AsError(err); ok {
			r.Result, r.ErrorCode, r.ErrorMsg = false, e.Code, e.Msg
		} else if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// GetRestore returns a restore of the project.
func (s *Service) GetRestore(ctx context.Context, projectID, id string) (*store.Restore, error) {
	r, err := s.store.GetRestore(ctx, projectID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errf(CodeItemNotFound, "restore %s is not found", id)
	}
	return r, err
}

// Restores lists the restores of the project that match f, newest first.
func (s *Service) Restores(ctx context.Context, projectID string, f store.RestoreFilter) ([]*store.Restore, error) {
	rs, err := s.store.ListRestores(ctx, projectID, f)
	if errors.Is(err, store.ErrBadMarker) {
		return nil, InvalidParam("marker", "no restore %s to continue after", f.Marker)
	}
	return rs, err
}

func notAvailable(itemID, why string) *Error {
	return errf(CodeItemNotAvailable, "checkpoint item not available: backup %s is %s; only an available backup can be restored", itemID, why)
}

func serverRestoring(serverID string) *Error {
	return errf(CodeServerRestoring, "The server is restoring: a restore onto server %s is in progress; try again when it has finished", serverID)
}

// planRestore checks a restore of backup itemID onto server serverID with
// the given mapping (empty: derived), in the order the refusals are
// documented, and returns the plan.
func (s *Service) planRestore(ctx context.Context, projectID, itemID, serverID, resourceType string, mapping []store.VolumeMapping) (*restorePlan, error) {
	it, err := s.Item(ctx, projectID, itemID)
	if err != nil {
		return nil, err
	}
	if it.Status != store.StatusAvailable {
		return nil, notAvailable(it.ID, it.Status)
	}
	if err := s.checkDamage(ctx, it); err != nil {
		return nil, err
	}
	if resourceType != ResourceTypeServer {
		return nil, errf(CodeTypeNotRestorable, "Resource (%s) type (%s) is not support restoration: only %s is supported", serverID, resourceType, ResourceTypeServer)
	}
	if it.ResourceType != "" && it.ResourceType != ResourceTypeServer {
		return nil, errf(CodeTargetNotAllowed, "can not restore server type is not allow: backup %s is of a %s", it.ID, it.ResourceType)
	}
	srv, err := s.compute.Server(ctx, projectID, serverID)
	if errors.Is(err, compute.ErrNotFound) {
		return nil, errf(CodeServerNotFound, "server do not exist: no server %s in project %s", serverID, projectID)
	}
	if err != nil {
		return nil, fmt.Errorf("look up server %s: %w", serverID, err)
	}
	if !srv.Protectable() {
		return nil, errf(CodeTargetNotAllowed, "can not restore server type is not allow: server %s is %s; it must be ACTIVE or SHUTOFF", srv.ID, srv.Status)
	}
	if len(srv.Volumes) == 0 {
		return nil, errf(CodeNoVolumeRestore, "No volume attached to the server (%s) for restore.", srv.ID)
	}
	if len(it.Info.Volumes) == 0 || it.Info.SnapshotID == "" {
		return nil, notAvailable(it.ID, "without disk data")
	}
	if len(mapping) == 0 {
		mapping, err = defaultMapping(it, srv)
	} else {
		err = checkMapping(it, srv, mapping)
	}
	if err != nil {
		return nil, err
	}
	busy, err := s.store.ListRestores(ctx, projectID, store.RestoreFilter{Status: store.RestoreInProgress, ServerID: srv.ID, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(busy) > 0 {
		return nil, serverRestoring(srv.ID)
	}
	if _, err := s.store.LatestItem(ctx, projectID, srv.ID, []string{store.StatusWaitingProtect, store.StatusProtecting}, s.clock().AddDate(100, 0, 0)); err == nil {
		return nil, errf(CodeServerInService, "Server (%s) is already in service: a backup of it is running; restore when it has finished", srv.ID)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return &restorePlan{item: it, server: srv, volumes: mapping}, nil
}

// defaultMapping maps the disk backups of it onto srv when the request
// gives no mapping: one disk backup onto a server with one disk, or every
// disk backup onto the disk with its source disk's id (the same server, or
// a server with the same disk ids). Anything else must be mapped.
func defaultMapping(it *store.Item, srv compute.Server) ([]store.VolumeMapping, error) {
	vbs := it.Info.Volumes
	var m []store.VolumeMapping
	if len(vbs) == 1 && len(srv.Volumes) == 1 {
		m = []store.VolumeMapping{{BackupID: vbs[0].ID, VolumeID: srv.Volumes[0].ID}}
	} else {
		var unmapped []string
		for _, vb := range vbs {
			if slices.ContainsFunc(srv.Volumes, func(v compute.Volume) bool { return v.ID == vb.SourceVolumeID }) {
				m = append(m, store.VolumeMapping{BackupID: vb.ID, VolumeID: vb.SourceVolumeID})
			} else {
				unmapped = append(unmapped, vb.ID)
			}
		}
		if len(unmapped) > 0 {
			return nil, errf(CodePartialRestore, "Not assign backup(s) (%s) to volume(s), partial restore is not supported: server %s has no disk with the id of their source disk; map every disk backup in targets.volumes",
				strings.Join(unmapped, ", "), srv.ID)
		}
	}
	return m, checkMapping(it, srv, m)
}

// checkMapping checks that mapping puts every disk backup of it onto its
// own disk of srv that can take it.
func checkMapping(it *store.Item, srv compute.Server, mapping []store.VolumeMapping) error {
	backups := map[string]store.VolumeBackup{}
	for _, vb := range it.Info.Volumes {
		backups[vb.ID] = vb
	}
	disks := map[string]compute.Volume{}
	for _, v := range srv.Volumes {
		disks[v.ID] = v
	}
	seenB, seenV := map[string]bool{}, map[string]bool{}
	var notInItem, notOnTarget []string
	for i, m := range mapping {
		if m.BackupID == "" || m.VolumeID == "" {
			return InvalidParam("volumes", "entry %d needs both backup_id and volume_id", i+1)
		}
		if seenB[m.BackupID] {
			return InvalidParam("volumes", "disk backup %s is mapped twice", m.BackupID)
		}
		if seenV[m.VolumeID] {
			return InvalidParam("volumes", "disk %s is the target of two disk backups", m.VolumeID)
		}
		seenB[m.BackupID], seenV[m.VolumeID] = true, true
		if _, ok := backups[m.BackupID]; !ok {
			notInItem = append(notInItem, m.BackupID)
		}
		if _, ok := disks[m.VolumeID]; !ok {
			notOnTarget = append(notOnTarget, m.VolumeID)
		}
	}
	if len(notInItem) > 0 {
		return errf(CodeBackupNotInItem, "Can not find backup(s) (%s) in checkpoint item (%s).", strings.Join(notInItem, ", "), it.ID)
	}
	if len(notOnTarget) > 0 {
		return errf(CodeVolumeNotOnTarget, "Volume(s) (%s) not found in target server %s.", strings.Join(notOnTarget, ", "), srv.ID)
	}
	var unmapped []string
	for _, vb := range it.Info.Volumes {
		if !seenB[vb.ID] {
			unmapped = append(unmapped, vb.ID)
		}
	}
	if len(unmapped) > 0 {
		return errf(CodePartialRestore, "Not assign backup(s) (%s) to volume(s), partial restore is not supported.", strings.Join(unmapped, ", "))
	}
	for _, m := range mapping {
		vb, v := backups[m.BackupID], disks[m.VolumeID]
		switch {
		case v.Shareable:
			return errf(CodeShareableTarget, "Volume (%s) attached to server (%s) is shareable volume.", v.ID, srv.ID)
		case !vb.Bootable && v.Bootable:
			return errf(CodeDataToSystemVolume, "Can not restore data volume to system volume. server id is (%s): disk backup %s is of a data disk, disk %s is the system disk.", srv.ID, vb.ID, v.ID)
		case v.Size < vb.SourceSizeBytes:
			return errf(CodeTargetTooSmall, "Target volume (%s) size (%d bytes) small than volume backup (%s) size (%d bytes).", v.ID, v.Size, vb.ID, vb.SourceSizeBytes)
		}
	}
	return nil
}

// resourcesStatus gives the server and each target disk the same status.
func resourcesStatus(serverID string, vols []store.VolumeMapping, status string) map[string]string {
	m := map[string]string{serverKey(serverID): status}
	for _, v := range vols {
		m[volumeKey(v.VolumeID)] = status
	}
	return m
}

func serverKey(id string) string { return ResourceTypeServer + "#" + id }
func volumeKey(id string) string { return "OS::Cinder::Volume#" + id }

// RestoreJob returns the handler of restore jobs.
func (s *Service) RestoreJob() jobs.Handler { return restoreJob{s} }

type restoreJob struct{ s *Service }

// restorePair is one disk to restore.
type restorePair struct {
	backup store.VolumeBackup
	vm     *repository.VolumeManifest
	disk   compute.Volume
}

// Run restores every mapped disk: it checks that the repository holds
// every chunk, stops the server, writes each disk (each chunk is
// authenticated before it is written) and syncs it, and starts the server
// when power_on. Interrupted, it runs again from the start: the stop
// command runs again and every disk is written again whole.
func (h restoreJob) Run(ctx context.Context, j *store.Job) error {
	s := h.s
	r, err := s.store.GetRestoreAnyProject(ctx, j.RestoreID)
	if err != nil {
		return fmt.Errorf("load restore %s: %w", j.RestoreID, err)
	}
	if r.Status != store.RestoreInProgress {
		return nil // finished by an earlier run
	}
	it, err := s.store.GetItemAnyProject(ctx, r.ItemID)
	if err != nil {
		return fmt.Errorf("load backup %s: %w", r.ItemID, err)
	}
	if it.Status != store.StatusWaitingRestore && it.Status != store.StatusRestoring {
		return fmt.Errorf("backup %s is %s, not being restored", it.ID, it.Status)
	}
	if _, err := s.store.SetItemStatus(ctx, it.ID, []string{store.StatusWaitingRestore}, store.StatusRestoring); err != nil {
		return err
	}
	srv, err := s.compute.Server(ctx, r.ProjectID, r.ServerID)
	if errors.Is(err, compute.ErrNotFound) {
		return fmt.Errorf("target server %s no longer exists", r.ServerID)
	}
	if err != nil {
		return err
	}
	snap, err := s.repo.LoadSnapshot(ctx, it.Info.SnapshotID)
	if err != nil {
		return fmt.Errorf("backup %s: read its manifest: %w", it.ID, err)
	}
	if err := checkSnapshot(snap, it); err != nil {
		return err
	}
	pairs, err := restorePairs(it, snap, srv, r.Volumes)
	if err != nil {
		return err
	}
	for _, p := range pairs {
		if err := s.repo.CheckVolume(ctx, p.vm); err != nil {
			var ue *repository.UnrestorableError
			if errors.As(err, &ue) {
				s.recordRestoreDamage(ctx, it, ue)
			}
			return diskError(p, fmt.Errorf("nothing was written: %w", err))
		}
	}

	rs, err := s.compute.Restore(ctx, srv)
	if err != nil {
		return err
	}
	for _, p := range pairs {
		if err := h.restoreDisk(ctx, rs, p); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ue *repository.UnrestorableError
			if errors.As(err, &ue) {
				s.recordRestoreDamage(ctx, it, ue)
			}
			return diskError(p, err)
		}
	}
	if err := rs.Finish(ctx, r.PowerOn); err != nil {
		return err
	}

	ctx = context.WithoutCancel(ctx)
	s.recordRestored(ctx, it)
	r.Status = store.RestoreSuccess
	r.ResourcesStatus = resourcesStatus(r.ServerID, r.Volumes, ResourceAvailable)
	return s.store.InTx(ctx, func(tx store.Tx) error {
		if err := tx.UpdateRestore(ctx, r); err != nil {
			return err
		}
		_, err := tx.SetItemStatus(ctx, it.ID, []string{store.StatusWaitingRestore, store.StatusRestoring}, store.StatusAvailable)
		return err
	})
}

// restoreDisk writes one disk and makes it durable. A writer that is a file
// (the local driver's) is written as a file: holes, direct I/O.
func (h restoreJob) restoreDisk(ctx context.Context, rs compute.Restore, p restorePair) error {
	w, err := rs.Open(ctx, p.disk)
	if err != nil {
		return err
	}
	if f, ok := w.(interface{ File() *os.File }); ok {
		err = h.s.repo.RestoreVolume(ctx, p.vm, f.File(), nil)
	} else {
		err = h.s.repo.RestoreVolumeTo(ctx, p.vm, w, p.disk.Name, nil)
	}
	if err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	h.s.meter.Restored(p.vm.Size)
	return nil
}

func diskError(p restorePair, err error) error {
	return &compute.VolumeError{VolumeID: p.disk.ID, Name: p.disk.Name, Path: p.disk.Path,
		Err: fmt.Errorf("restoring disk backup %s (of disk %s): %w", p.backup.ID, p.backup.SourceVolumeID, err)}
}

// restorePairs resolves the mapping of a restore against the backup's
// manifest and the target server as it is now.
func restorePairs(it *store.Item, snap *repository.Snapshot, srv compute.Server, mapping []store.VolumeMapping) ([]restorePair, error) {
	var pairs []restorePair
	for _, m := range mapping {
		i := slices.IndexFunc(it.Info.Volumes, func(vb store.VolumeBackup) bool { return vb.ID == m.BackupID })
		if i < 0 {
			return nil, fmt.Errorf("disk backup %s is not in backup %s", m.BackupID, it.ID)
		}
		vb := it.Info.Volumes[i]
		j := slices.IndexFunc(snap.Volumes, func(vm repository.VolumeManifest) bool { return vm.VolumeID == vb.SourceVolumeID })
		if j < 0 {
			return nil, fmt.Errorf("the manifest of backup %s has no disk %s", it.ID, vb.SourceVolumeID)
		}
		k := slices.IndexFunc(srv.Volumes, func(v compute.Volume) bool { return v.ID == m.VolumeID })
		if k < 0 {
			return nil, fmt.Errorf("disk %s is no longer attached to server %s", m.VolumeID, srv.ID)
		}
		disk := srv.Volumes[k]
		if disk.Size < snap.Volumes[j].Size {
			return nil, fmt.Errorf("disk %s has %d bytes, disk backup %s needs %d", disk.ID, disk.Size, vb.ID, snap.Volumes[j].Size)
		}
		pairs = append(pairs, restorePair{backup: vb, vm: &snap.Volumes[j], disk: disk})
	}
	return pairs, nil
}

// Fail records the failure on the restore and returns the backup to
// available: a failed restore leaves the backup as good as it was.
func (h restoreJob) Fail(ctx context.Context, j *store.Job, reason error) {
	s := h.s
	ctx = context.WithoutCancel(ctx)
	r, err := s.store.GetRestoreAnyProject(ctx, j.RestoreID)
	if err != nil {
		s.log.ErrorContext(ctx, "load failed restore", "restore_id", j.RestoreID, "err", err)
		return
	}
	if r.Status == store.RestoreInProgress {
		r.Status = store.RestoreFail
		r.ResourcesStatus = map[string]string{serverKey(r.ServerID): ResourceError}
		r.ResourcesReason = map[string]string{serverKey(r.ServerID): reason.Error()}
		var ve *compute.VolumeError
		if errors.As(reason, &ve) {
			r.ResourcesStatus[volumeKey(ve.VolumeID)] = ResourceError
			r.ResourcesReason[volumeKey(ve.VolumeID)] = reason.Error()
		}
	}
	err = s.store.InTx(ctx, func(tx store.Tx) error {
		if err := tx.UpdateRestore(ctx, r); err != nil {
			return err
		}
		_, err := tx.SetItemStatus(ctx, r.ItemID, []string{store.StatusWaitingRestore, store.StatusRestoring}, store.StatusAvailable)
		return err
	})
	if err != nil {
		s.log.ErrorContext(ctx, "record restore failure", "restore_id", r.ID, "err", err)
	}
}

// notRestoring refuses a backup of a server whose disks a restore is
// writing: it would capture half-restored disks.
func (s *Service) notRestoring(ctx context.Context, projectID, serverID string) error {
	busy, err := s.store.ListRestores(ctx, projectID, store.RestoreFilter{Status: store.RestoreInProgress, ServerID: serverID, Limit: 1})
	if err != nil {
		return err
	}
	if len(busy) > 0 {
		return errf(CodeServerInService, "Server (%s) is already in service: a restore onto it is in progress; back it up when the restore has finished", serverID)
	}
	return nil
}
