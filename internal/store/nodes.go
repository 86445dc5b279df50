package store

import (
	"context"
	"encoding/json"
	"strings"
	"time"
)

// Node is a member of a cluster: every csbs process started with the same
// node.name, sharing one database. A node is up while its heartbeat has not
// expired.
type Node struct {
	Name        string
	StartedAt   time.Time // first heartbeat of the node's current run
	HeartbeatAt time.Time // last heartbeat
	ExpiresAt   time.Time // the node is down after this, unless it beats again
}

// Up reports whether the node's last heartbeat still holds at t.
func (n Node) Up(t time.Time) bool { return !t.After(n.ExpiresAt) }

// PlacedServer is a server as a node published it: the node's compute driver
// has its disks. Server is the driver's description (compute.Server as
// JSON); the store does not look into it.
type PlacedServer struct {
	ServerID  string
	ProjectID string
	Server    json.RawMessage
	Node      Node // the publishing node and its last heartbeat
}

// NodeWait says that a backup's pending job waits for a node that is down.
// It is derived when read, never stored.
type NodeWait struct {
	Node     string
	LastSeen time.Time // zero when the node was never seen
}

// Nodes is the registry of a cluster's nodes and of the servers each one
// runs the jobs of. Its times come from the clocks of the processes that
// write them, like job leases: the nodes' clocks must agree to well within
// a heartbeat's lifetime.
type Nodes interface {
	// HeartbeatNode records that node is up for ttl from now. The first
	// beat after the node was down (or ever) also sets StartedAt.
	HeartbeatNode(ctx context.Context, node string, ttl time.Duration) error
	// PublishServers replaces, in one transaction, every server published
	// by node with servers (their Node field is ignored).
	PublishServers(ctx context.Context, node string, servers []PlacedServer) error
	// PlacedServers returns the published servers of a project ("": every
	// project), only the one with serverID when it is not "", with their
	// node's state, ordered by server id then node name. A server may be
	// published by several nodes (it moved, or two inventories name it).
	PlacedServers(ctx context.Context, projectID, serverID string) ([]PlacedServer, error)
	// ListNodes returns every node ever seen, by name.
	ListNodes(ctx context.Context) ([]Node, error)
	// NodeWaits returns, for those of itemIDs whose queued or running job
	// must run on a node that is down at t (or was never seen), which node
	// it waits for. Items whose job may run anywhere, or on a node that is
	// up, are absent.
	NodeWaits(ctx context.Context, itemIDs []string, t time.Time) (map[string]NodeWait, error)
	// AdoptJobs places on node the jobs that wait for a node that is down
	// (or was never seen) at t although node now publishes their server:
	// the server moved, or its node was renamed. A job waits for a server
	// of its backup (protect) or the target server of its restore; only
	// queued jobs and running jobs whose lease expired move. It returns
	// how many jobs moved.
	AdoptJobs(ctx context.Context, node string, t time.Time) (int, error)
}

func (s *sqlStore) HeartbeatNode(ctx context.Context, node string, ttl time.Duration) error {
	t := now()
	// A node that comes back after its heartbeat expired starts a new run.
	_, err := s.exec(ctx, `INSERT INTO nodes (name, started_at, heartbeat_at, expires_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET
			started_at = CASE WHEN nodes.expires_at < excluded.heartbeat_at THEN excluded.started_at ELSE nodes.started_at END,
			heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at`,
		node, toMicros(t), toMicros(t), toMicros(t.Add(ttl)))
	if err != nil {
		return s.fail("heartbeat of node "+node, err)
	}
	return nil
}

func (s *sqlStore) PublishServers(ctx context.Context, node string, servers []PlacedServer) error {
	return s.InTx(ctx, func(tx Tx) error {
		q := tx.(*queries)
		if _, err := q.exec(ctx, `DELETE FROM node_servers WHERE node = ?`, node); err != nil {
			return q.fail("publish servers of node "+node, err)
		}
		for _, p := range servers {
			// An upsert: two processes of one node may publish at once, and
			// on PostgreSQL neither sees the rows the other inserts.
			if _, err := q.exec(ctx, `INSERT INTO node_servers (node, server_id, project_id, server) VALUES (?, ?, ?, ?)
				ON CONFLICT (node, server_id) DO UPDATE SET project_id = excluded.project_id, server = excluded.server`,
				node, p.ServerID, p.ProjectID, string(p.Server)); err != nil {
				return q.fail("publish server "+p.ServerID+" of node "+node, err)
			}
		}
		return nil
	})
}

func (s *sqlStore) PlacedServers(ctx context.Context, projectID, serverID string) ([]PlacedServer, error) {
	q := `SELECT ns.server_id, ns.project_id, ns.server, ns.node,
			COALESCE(n.started_at, 0), COALESCE(n.heartbeat_at, 0), COALESCE(n.expires_at, 0)
		FROM node_servers ns LEFT JOIN nodes n ON n.name = ns.node WHERE 1 = 1`
	var args []any
	if projectID != "" {
		q += ` AND ns.project_id = ?`
		args = append(args, projectID)
	}
	if serverID != "" {
		q += ` AND ns.server_id = ?`
		args = append(args, serverID)
	}
	rows, err := s.query(ctx, q+` ORDER BY ns.server_id, ns.node`, args...)
	if err != nil {
		return nil, s.fail("list placed servers", err)
	}
	defer rows.Close()
	var out []PlacedServer
	for rows.Next() {
		var (
			p                PlacedServer
			srv              string
			started, hb, exp int64
		)
		if err := rows.Scan(&p.ServerID, &p.ProjectID, &srv, &p.Node.Name, &started, &hb, &exp); err != nil {
			return nil, s.fail("list placed servers", err)
		}
		p.Server = json.RawMessage(srv)
		p.Node.StartedAt, p.Node.HeartbeatAt, p.Node.ExpiresAt = optTime(started), optTime(hb), optTime(exp)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list placed servers", err)
	}
	return out, nil
}

func (s *sqlStore) ListNodes(ctx context.Context) ([]Node, error) {
	rows, err := s.query(ctx, `SELECT name, started_at, heartbeat_at, expires_at FROM nodes ORDER BY name`)
	if err != nil {
		return nil, s.fail("list nodes", err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		var (
			n                Node
			started, hb, exp int64
		)
		if err := rows.Scan(&n.Name, &started, &hb, &exp); err != nil {
			return nil, s.fail("list nodes", err)
		}
		n.StartedAt, n.HeartbeatAt, n.ExpiresAt = fromMicros(started), fromMicros(hb), fromMicros(exp)
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list nodes", err)
	}
	return out, nil
}

func (s *sqlStore) NodeWaits(ctx context.Context, itemIDs []string, t time.Time) (map[string]NodeWait, error) {
	out := map[string]NodeWait{}
	if len(itemIDs) == 0 {
		return out, nil
	}
	args := make([]any, 0, len(itemIDs)+1)
	for _, id := range itemIDs {
		args = append(args, id)
	}
	args = append(args, toMicros(t))
	rows, err := s.query(ctx, `SELECT j.item_id, j.node, COALESCE(n.heartbeat_at, 0)
		FROM jobs j LEFT JOIN nodes n ON n.name = j.node
		WHERE j.item_id IN (`+strings.TrimSuffix(strings.Repeat("?, ", len(itemIDs)), ", ")+`)
			AND j.status IN ('queued', 'running') AND j.node <> ''
			AND (n.name IS NULL OR n.expires_at < ?)`, args...)
	if err != nil {
		return nil, s.fail("look up jobs waiting for nodes", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			item string
			w    NodeWait
			hb   int64
		)
		if err := rows.Scan(&item, &w.Node, &hb); err != nil {
			return nil, s.fail("look up jobs waiting for nodes", err)
		}
		w.LastSeen = optTime(hb)
		out[item] = w
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("look up jobs waiting for nodes", err)
	}
	return out, nil
}

func (s *sqlStore) AdoptJobs(ctx context.Context, node string, t time.Time) (int, error) {
	us := toMicros(t)
	res, err := s.exec(ctx, `UPDATE jobs SET node = ?
		WHERE node <> '' AND node <> ?
			AND (status = 'queued' OR (status = 'running' AND lease_until < ?))
			AND node NOT IN (SELECT name FROM nodes WHERE expires_at >= ?)
			AND (
				(restore_id = '' AND item_id IN (SELECT i.id FROM items i JOIN node_servers ns
					ON ns.server_id = i.resource_id AND ns.project_id = i.project_id WHERE ns.node = ?))
				OR (restore_id <> '' AND restore_id IN (SELECT r.id FROM restores r JOIN node_servers ns
					ON ns.server_id = r.server_id AND ns.project_id = r.project_id WHERE ns.node = ?))
			)`, node, node, us, us, node, node)
	if err != nil {
		return 0, s.fail("adopt jobs for node "+node, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, s.fail("adopt jobs for node "+node, err)
	}
	return int(n), nil
}

// optTime is the time of stored microseconds, zero for 0 (absent).
func optTime(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return fromMicros(us)
}
