// Package cluster lets several csbs nodes share one database: each node runs
// `csbs serve` with its own compute driver (the servers of its host) and
// serves the whole API, while the backups and restores of a server run on
// the node whose driver has its disks.
//
// A Member publishes its node to the store's registry: a heartbeat every
// Config.Heartbeat, good for three of them, and the servers its driver
// knows. Driver is the cluster-wide view of compute that the service uses:
// servers of its own driver first, then those other nodes published, each
// with the node that has it (compute.Server.Node); jobs carry that node and
// the job queue gives a node only its own jobs and jobs of no node.
//
// Invariants:
//   - A node reads and writes disks only through its own driver: Driver
//     refuses to snapshot a server placed on another node.
//   - A job placed on a node is run only by processes of that node; while
//     the node is down it waits (the service says so in the backup's
//     extend_info) and resumes when the node is back — unless a node that
//     is up publishes the job's server meanwhile (the server moved, the
//     node was renamed): that node takes the job over.
//   - A server is placed on one node at a time: its own node when the local
//     driver has it, otherwise the publisher that is up (the first by name
//     if several are), otherwise the one seen last.
package cluster

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/store"
)

// Config configures a Member.
type Config struct {
	// Node names this node; every process with the same name is the same
	// node (same compute driver, same servers). Required.
	Node string
	// Heartbeat is how often the node says it is up and republishes its
	// servers when they changed; it is down after three missed beats.
	// Default 5s.
	Heartbeat time.Duration
	// Log receives publishing errors. Default slog.Default().
	Log *slog.Logger
}

// Member is one node's presence in the cluster.
type Member struct {
	store store.Nodes
	local compute.Driver
	node  string
	beat  time.Duration
	log   *slog.Logger

	published uint64 // hash of the last published server set; 0: none yet
	beats     int
}

// republishEvery is how many beats a node goes without rewriting an
// unchanged server set (rewriting repairs rows removed by hand).
const republishEvery = 60

// New returns the Member of node c.Node whose servers are those of local.
func New(s store.Nodes, local compute.Driver, c Config) *Member {
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return &Member{store: s, local: local, node: c.Node, beat: c.Heartbeat, log: c.Log}
}

// Node is the name of this member's node.
func (m *Member) Node() string { return m.node }

// TTL is how long a heartbeat holds: three beats.
func (m *Member) TTL() time.Duration { return 3 * m.beat }

// Beat publishes the node's servers when they changed (or every
// republishEvery beats), renews its heartbeat, and takes over the waiting
// jobs of its servers that are placed on a node that is down or gone
// (store.Nodes.AdoptJobs). Call it once before
// serving, so that the node's servers are known before its API answers;
// Run then calls it every Heartbeat. An error leaves the previous state
// in place: the node's servers stay published and, if the database stays
// unreachable for longer than TTL, the node is seen down.
func (m *Member) Beat(ctx context.Context) error {
	srvs, err := m.local.Servers(ctx, "")
	if err != nil {
		return err
	}
	placed := make([]store.PlacedServer, 0, len(srvs))
	h := fnv.New64a()
	for _, s := range srvs {
		s.Node = ""
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		h.Write(b)
		placed = append(placed, store.PlacedServer{ServerID: s.ID, ProjectID: s.ProjectID, Server: b})
	}
	sum := h.Sum64() | 1 // never 0
	m.beats++
	if sum != m.published || m.beats%republishEvery == 0 {
		if err := m.store.PublishServers(ctx, m.node, placed); err != nil {
			return err
		}
		m.published = sum
	}
	if err := m.store.HeartbeatNode(ctx, m.node, m.TTL()); err != nil {
		return err
	}
	n, err := m.store.AdoptJobs(ctx, m.node, time.Now())
	if n > 0 {
		m.log.Warn("took over jobs of servers this node has, from a node that is down or gone (the server moved, or the node was renamed)", "node", m.node, "jobs", n)
	}
	return err
}

// Run beats every Heartbeat until ctx is cancelled.
func (m *Member) Run(ctx context.Context) {
	t := time.NewTicker(m.beat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.Beat(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("node heartbeat failed; other nodes see this node down if it keeps failing", "node", m.node, "err", err)
		}
	}
}
