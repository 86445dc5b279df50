package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/compute"
)

// ErrElsewhere means a server's disks are on another node: only that node
// can snapshot them. A job that gets it was run by the wrong node.
var ErrElsewhere = errors.New("server's disks are on another node")

// Driver is the cluster-wide view of compute for the node of a Member: the
// servers of the local driver, marked with this node, and the servers other
// nodes published, marked with theirs. Snapshot and Restore act on local
// servers only.
type Driver struct {
	m   *Member
	now func() time.Time
}

// Driver returns the cluster-wide view of m's node.
func (m *Member) Driver() *Driver { return &Driver{m: m, now: time.Now} }

var _ compute.Driver = (*Driver)(nil)

// Server returns the server from the local driver, or else from the
// registry, placed on the node that has it; compute.ErrNotFound when no
// node has published it.
func (d *Driver) Server(ctx context.Context, projectID, id string) (compute.Server, error) {
	s, err := d.m.local.Server(ctx, projectID, id)
	if err == nil {
		s.Node = d.m.node
		return s, nil
	}
	if !errors.Is(err, compute.ErrNotFound) {
		return s, err
	}
	placed, err := d.m.store.PlacedServers(ctx, projectID, id)
	if err != nil {
		return compute.Server{}, fmt.Errorf("look up server %s on other nodes: %w", id, err)
	}
	p, ok := place(d.m.node, placed, d.now())
	if !ok {
		return compute.Server{}, compute.ErrNotFound
	}
	return server(p)
}

// Servers lists the servers of a project on every node, local ones first
// and then by id; each once.
func (d *Driver) Servers(ctx context.Context, projectID string) ([]compute.Server, error) {
	out, err := d.m.local.Servers(ctx, projectID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i := range out {
		out[i].Node = d.m.node
		seen[out[i].ID] = true
	}
	placed, err := d.m.store.PlacedServers(ctx, projectID, "")
	if err != nil {
		return nil, fmt.Errorf("list servers of other nodes: %w", err)
	}
	now := d.now()
	for len(placed) > 0 {
		n := 1
		for n < len(placed) && placed[n].ServerID == placed[0].ServerID {
			n++
		}
		if p, ok := place(d.m.node, placed[:n], now); ok && !seen[p.ServerID] {
			s, err := server(p)
			if err != nil {
				return nil, fmt.Errorf("server %s published by node %s: %w", p.ServerID, p.Node.Name, err)
			}
			out = append(out, s)
		}
		placed = placed[n:]
	}
	slices.SortStableFunc(out[len(seen):], func(a, b compute.Server) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Snapshot snapshots a server of this node through the local driver. A
// server of another node is refused with ErrElsewhere: its disks are not
// here.
func (d *Driver) Snapshot(ctx context.Context, s compute.Server, req compute.SnapshotRequest) (*compute.Snapshot, error) {
	if err := d.here(s); err != nil {
		return nil, err
	}
	return d.m.local.Snapshot(ctx, s, req)
}

// Restore starts a restore of a server of this node through the local
// driver (a restore runs on the node of its target server). A server of
// another node is refused with ErrElsewhere.
func (d *Driver) Restore(ctx context.Context, s compute.Server) (compute.Restore, error) {
	if err := d.here(s); err != nil {
		return nil, err
	}
	return d.m.local.Restore(ctx, s)
}

var _ compute.Keeper = (*Driver)(nil)

// KeptClones lists the clones the local driver keeps on this node's disks
// (compute.Keeper); none when it keeps none. Other nodes' clones are on
// their disks: ask their APIs.
func (d *Driver) KeptClones(ctx context.Context) ([]compute.KeptClone, error) {
	k, ok := d.m.local.(compute.Keeper)
	if !ok {
		return nil, nil
	}
	return k.KeptClones(ctx)
}

// MeasureKept measures a clone the local driver keeps on this node's
// disks (compute.Keeper).
func (d *Driver) MeasureKept(ctx context.Context, kc *compute.KeptClone) error {
	k, ok := d.m.local.(compute.Keeper)
	if !ok {
		return nil
	}
	return k.MeasureKept(ctx, kc)
}

// DropKept drops a clone the local driver keeps on this node's disks
// (compute.Keeper).
func (d *Driver) DropKept(ctx context.Context, kc compute.KeptClone) error {
	k, ok := d.m.local.(compute.Keeper)
	if !ok {
		return nil
	}
	return k.DropKept(ctx, kc)
}

func (d *Driver) here(s compute.Server) error {
	if s.Node != "" && s.Node != d.m.node {
		return fmt.Errorf("server %s: %w (node %s, this is node %s)", s.ID, ErrElsewhere, s.Node, d.m.node)
	}
	return nil
}
