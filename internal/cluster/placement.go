package cluster

import (
	"encoding/json"
	"time"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/store"
)

// place decides which node has a server that the local driver of node self
// does not have, among the placements other nodes published, at time now:
// a node that is up (the first by name when several are: two inventories
// naming one server is a mistake, but the answer must not flap), otherwise
// the node seen last (its jobs wait for it). Placements by self are stale
// (the local driver is the truth about self) and ignored. ok is false when
// no other node has the server.
func place(self string, placed []store.PlacedServer, now time.Time) (p store.PlacedServer, ok bool) {
	for _, c := range placed {
		if c.Node.Name == self {
			continue
		}
		if !ok || better(c.Node, p.Node, now) {
			p, ok = c, true
		}
	}
	return p, ok
}

// better reports whether node a is a better home than b at now: up beats
// down; among nodes that are up the first by name; among nodes that are
// down the one seen last, then the first by name.
func better(a, b store.Node, now time.Time) bool {
	if a.Up(now) != b.Up(now) {
		return a.Up(now)
	}
	if !a.Up(now) && !a.HeartbeatAt.Equal(b.HeartbeatAt) {
		return a.HeartbeatAt.After(b.HeartbeatAt)
	}
	return a.Name < b.Name
}

// server decodes a published server and marks its node.
func server(p store.PlacedServer) (compute.Server, error) {
	var s compute.Server
	if err := json.Unmarshal(p.Server, &s); err != nil {
		return s, err
	}
	s.Node = p.Node.Name
	return s, nil
}
