package service

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/store"
)

// Kept clones (an operator's view): the copies of volumes that the compute
// driver keeps on this node's disks between backups (compute.Keeper: the
// local driver's kept reflink clones), what they cost, and dropping them.
// They are also dropped without being asked once they can never serve
// again (SweepKeptClones).

// KeptClone is a clone kept on this node's disks with the project, server
// and volume it belongs to, as far as the inventory or its backup tell
// (empty when neither does).
type KeptClone struct {
	compute.KeptClone
	ProjectID  string
	ServerName string
	VolumeName string
}

// KeptFilter selects kept clones; empty fields select all.
type KeptFilter struct {
	// ProjectID selects the clones of the project's servers; "" selects
	// every clone, those of no known project too.
	ProjectID string
	ServerID  string
	VolumeID  string
}

// Node is the node this service runs on ("" in a single-node
// installation): kept clones are on its disks only.
func (s *Service) Node() string { return s.node }

// KeptClones lists the kept clones on this node's disks that f selects,
// each measured now (what it holds alone). A driver that keeps none lists
// none.
func (s *Service) KeptClones(ctx context.Context, f KeptFilter) ([]KeptClone, error) {
	k, ok := s.compute.(compute.Keeper)
	if !ok {
		return nil, nil
	}
	raw, err := k.KeptClones(ctx)
	if err != nil {
		return nil, fmt.Errorf("list kept clones: %w", err)
	}
	servers, err := s.compute.Servers(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	out := []KeptClone{}
	for _, kc := range raw {
		c := s.describeKept(ctx, kc, servers)
		if f.ProjectID != "" && c.ProjectID != f.ProjectID ||
			f.ServerID != "" && c.ServerID != f.ServerID ||
			f.VolumeID != "" && c.VolumeID != f.VolumeID {
			continue
		}
		if err := k.MeasureKept(ctx, &c.KeptClone); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// describeKept finds the server and volume of a kept clone: in the
// inventory, or else in the backup that read it.
func (s *Service) describeKept(ctx context.Context, kc compute.KeptClone, servers []compute.Server) KeptClone {
	c := KeptClone{KeptClone: kc}
	for _, srv := range servers {
		if kc.ServerID != "" && srv.ID != kc.ServerID {
			continue
		}
		if i := slices.IndexFunc(srv.Volumes, func(v compute.Volume) bool { return v.ID == kc.VolumeID }); i >= 0 {
			c.ServerID, c.ProjectID, c.ServerName, c.VolumeName = srv.ID, srv.ProjectID, srv.Name, srv.Volumes[i].Name
			return c
		}
	}
	if kc.BackupID == "" {
		return c
	}
	it, err := s.store.GetItemAnyProject(ctx, kc.BackupID)
	if err != nil {
		return c
	}
	c.ServerID, c.ProjectID, c.ServerName = it.ResourceID, it.ProjectID, it.ResourceName
	for _, v := range it.Info.Volumes {
		if v.SourceVolumeID == kc.VolumeID {
			c.VolumeName = v.SourceVolumeName
		}
	}
	return c
}

// DropKeptClones drops the kept clones on this node's disks that f
// selects and returns them as measured before: their ExclusiveBytes are
// what was freed. The next backup of each volume reads it whole and says
// so (read_reason).
func (s *Service) DropKeptClones(ctx context.Context, f KeptFilter) ([]KeptClone, error) {
	cs, err := s.KeptClones(ctx, f)
	if err != nil || len(cs) == 0 {
		return cs, err
	}
	k := s.compute.(compute.Keeper) // KeptClones listed some
	var errs []error
	for _, c := range cs {
		if err := k.DropKept(ctx, c.KeptClone); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("drop kept clones: %w", err)
	}
	for _, c := range cs {
		s.log.InfoContext(ctx, "kept clone dropped; the next backup of its disk reads it whole",
			"server_id", c.ServerID, "volume_id", c.VolumeID, "path", c.Path, "freed_bytes", c.ExclusiveBytes)
	}
	return cs, nil
}

// SweepKeptClones drops the kept clones on this node's disks whose backup
// is gone, deleted or failed: a backup is only ever compared with the
// clone of its parent, the newest live backup, so such a clone can never
// serve again and only costs space. This is how the clones of a server
// whose backups were all deleted go, whichever node ran the deletes. A
// clone that names no backup, or whose backup cannot be looked up now, is
// kept (the driver's own clean-up removes clones without a record). It
// asks the database about every clone: run it now and then (csbs serve: at
// start and every 10 minutes).
func (s *Service) SweepKeptClones(ctx context.Context) (int, error) {
	return s.dropKept(ctx, func(c compute.KeptClone) (bool, error) {
		it, err := s.store.GetItemAnyProject(ctx, c.BackupID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return true, nil
		case err != nil:
			return false, fmt.Errorf("look up backup %s of kept clone %s: %w", c.BackupID, c.Path, err)
		}
		return !slices.Contains(liveStatuses, it.Status), nil
	})
}

// dropKeptOf drops the kept clones of a backup just deleted, if kept on
// this node (a delete runs on any node: the sweep of the node that keeps
// them finds them otherwise). A failure is logged; the sweep tries again.
func (s *Service) dropKeptOf(ctx context.Context, backupID string) {
	ctx = context.WithoutCancel(ctx)
	_, err := s.dropKept(ctx, func(c compute.KeptClone) (bool, error) { return c.BackupID == backupID, nil })
	if err != nil {
		s.log.WarnContext(ctx, "drop the kept clones of a deleted backup", "item_id", backupID, "err", err)
	}
}

// dropKept drops the kept clones of a backup for which gone says true.
func (s *Service) dropKept(ctx context.Context, gone func(compute.KeptClone) (bool, error)) (int, error) {
	k, ok := s.compute.(compute.Keeper)
	if !ok {
		return 0, nil
	}
	cs, err := k.KeptClones(ctx)
	if err != nil {
		return 0, fmt.Errorf("list kept clones: %w", err)
	}
	n := 0
	var errs []error
	for _, c := range cs {
		if c.BackupID == "" {
			continue
		}
		drop, err := gone(c)
		if err == nil && drop {
			err = k.DropKept(ctx, c)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if drop {
			n++
			s.log.InfoContext(ctx, "kept clone of a backup that is gone dropped", "volume_id", c.VolumeID,
				"backup_id", c.BackupID, "path", c.Path, "apparent_bytes", c.ApparentBytes)
		}
	}
	return n, errors.Join(errs...)
}
