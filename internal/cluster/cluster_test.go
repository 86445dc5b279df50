package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/store"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func up(name string) store.Node {
	return store.Node{Name: name, HeartbeatAt: t0.Add(-time.Second), ExpiresAt: t0.Add(time.Minute)}
}

func down(name string, seen time.Duration) store.Node {
	return store.Node{Name: name, HeartbeatAt: t0.Add(-seen), ExpiresAt: t0.Add(-seen + time.Second)}
}

func never(name string) store.Node { return store.Node{Name: name} }

// TestPlace is the rule that puts a server on a node when the local driver
// does not have it.
func TestPlace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		self  string
		nodes []store.Node // the nodes that published the server
		want  string       // "" = not found
	}{
		{"nobody", "a", nil, ""},
		{"one node up", "a", []store.Node{up("b")}, "b"},
		{"one node down: its jobs wait for it", "a", []store.Node{down("b", time.Hour)}, "b"},
		{"never seen", "a", []store.Node{never("b")}, "b"},
		{"up beats down", "a", []store.Node{down("b", time.Minute), up("c")}, "c"},
		{"up beats down, either order", "a", []store.Node{up("c"), down("b", time.Minute)}, "c"},
		{"two up: first by name, stable", "a", []store.Node{up("d"), up("c")}, "c"},
		{"two down: the one seen last", "a", []store.Node{down("b", time.Hour), down("c", time.Minute)}, "c"},
		{"down beats never seen", "a", []store.Node{never("b"), down("c", time.Hour)}, "c"},
		{"own stale placement ignored", "a", []store.Node{up("a")}, ""},
		{"own stale placement ignored, other kept", "a", []store.Node{up("a"), down("b", time.Minute)}, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var placed []store.PlacedServer
			for _, n := range tc.nodes {
				placed = append(placed, store.PlacedServer{ServerID: "s", ProjectID: "p", Node: n})
			}
			p, ok := place(tc.self, placed, t0)
			got := ""
			if ok {
				got = p.Node.Name
			}
			if got != tc.want {
				t.Errorf("place(%s, %v) = %q; want %q", tc.self, tc.nodes, got, tc.want)
			}
		})
	}
}

// node is a node of a test cluster: its own inventory and disk, one shared
// database.
type node struct {
	m   *Member
	inv string
}

func newNode(t *testing.T, db store.Store, name string, servers ...string) *node {
	t.Helper()
	dir := t.TempDir()
	var inv local.Inventory
	for _, id := range servers {
		disk := filepath.Join(dir, id+".img")
		if err := os.WriteFile(disk, []byte("disk of "+id), 0o600); err != nil {
			t.Fatal(err)
		}
		inv.Servers = append(inv.Servers, local.ServerSpec{ID: id, Name: "srv-" + id, ProjectID: "p1",
			Volumes: []local.VolumeSpec{{ID: id + "-v", Path: disk, Bootable: true}}})
	}
	path := filepath.Join(dir, "servers.yaml")
	if err := local.WriteInventory(path, inv); err != nil {
		t.Fatal(err)
	}
	drv, err := local.New(path)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{m: New(db, drv, Config{Node: name, Heartbeat: time.Hour}), inv: path}
	if err := n.m.Beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "csbs.db"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestDriverAcrossNodes: each node finds every node's servers, placed on
// the node that has them, but snapshots only its own.
func TestDriverAcrossNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openStore(t)
	a := newNode(t, db, "a", "s1")
	b := newNode(t, db, "b", "s2", "s3")
	da, db2 := a.m.Driver(), b.m.Driver()

	for _, tc := range []struct {
		d        *Driver
		project  string
		id, node string
	}{
		{da, "p1", "s1", "a"}, {da, "p1", "s2", "b"}, {db2, "p1", "s1", "a"}, {db2, "p1", "s3", "b"}, {da, "", "s3", "b"},
	} {
		s, err := tc.d.Server(ctx, tc.project, tc.id)
		if err != nil || s.Node != tc.node || s.ID != tc.id || len(s.Volumes) != 1 || s.Volumes[0].Size == 0 {
			t.Errorf("node %s: Server(%s) = %+v, %v; want it on node %s with its disk", tc.d.m.node, tc.id, s, err, tc.node)
		}
	}
	for _, id := range []string{"s2", "nope"} {
		if _, err := da.Server(ctx, "p2", id); !errors.Is(err, compute.ErrNotFound) {
			t.Errorf("Server(p2, %s): err = %v, want ErrNotFound (another project)", id, err)
		}
	}
	all, err := da.Servers(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range all {
		got = append(got, s.Node+"/"+s.ID)
	}
	if want := []string{"a/s1", "b/s2", "b/s3"}; !slices.Equal(got, want) {
		t.Errorf("Servers = %v; want %v", got, want)
	}

	// Disks are read only by their own node.
	s2, _ := da.Server(ctx, "p1", "s2")
	if _, err := da.Snapshot(ctx, s2, compute.SnapshotRequest{}); !errors.Is(err, ErrElsewhere) {
		t.Errorf("node a snapshotting b's server: err = %v, want ErrElsewhere", err)
	}
	s2, _ = db2.Server(ctx, "p1", "s2")
	snap, err := db2.Snapshot(ctx, s2, compute.SnapshotRequest{})
	if err != nil {
		t.Fatalf("node b snapshotting its own server: %v", err)
	}
	snap.Release()

	// b's inventory loses s3 and gains s4: after its next beat, a sees that.
	if err := local.WriteInventory(b.inv, local.Inventory{Servers: []local.ServerSpec{
		{ID: "s2", ProjectID: "p1", Volumes: []local.VolumeSpec{{ID: "s2-v", Path: s2.Volumes[0].Path}}},
		{ID: "s4", ProjectID: "p1", Volumes: []local.VolumeSpec{{ID: "s4-v", Path: s2.Volumes[0].Path}}},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := b.m.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := da.Server(ctx, "p1", "s3"); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("s3 after b dropped it: err = %v, want ErrNotFound", err)
	}
	if s, err := da.Server(ctx, "p1", "s4"); err != nil || s.Node != "b" {
		t.Errorf("s4 after b added it: %+v, %v", s, err)
	}
}

// TestServerMoves: a server that moved from a node that went down to one
// that is up is placed on the new one, which takes over its waiting job.
func TestServerMoves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openStore(t)
	a := newNode(t, db, "a")
	newNode(t, db, "b", "s1")
	if s, err := a.m.Driver().Server(ctx, "p1", "s1"); err != nil || s.Node != "b" {
		t.Fatalf("s1 = %+v, %v; want on b", s, err)
	}
	// A backup of s1 is queued on b; b dies; c has s1 now.
	cp := &store.Checkpoint{ProjectID: "p1", CreatedAt: time.Now()}
	it := &store.Item{CheckpointID: cp.ID, ProjectID: "p1", ResourceID: "s1", Status: store.StatusWaitingProtect, CreatedAt: time.Now()}
	job := &store.Job{Kind: "protect", ProjectID: "p1", ItemID: "", Node: "b"}
	err := db.InTx(ctx, func(tx store.Tx) error {
		if err := tx.InsertCheckpoint(ctx, cp); err != nil {
			return err
		}
		it.CheckpointID = cp.ID
		if err := tx.InsertItem(ctx, it); err != nil {
			return err
		}
		job.ItemID = it.ID
		return tx.InsertJob(ctx, job)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.HeartbeatNode(ctx, "b", -time.Minute); err != nil {
		t.Fatal(err)
	}
	newNode(t, db, "c", "s1")
	if s, err := a.m.Driver().Server(ctx, "p1", "s1"); err != nil || s.Node != "c" {
		t.Fatalf("after the move s1 = %+v, %v; want on c (up) rather than b (down)", s, err)
	}
	if j, err := db.GetJob(ctx, job.ID); err != nil || j.Node != "c" {
		t.Fatalf("the backup queued on b after c's first beat: %+v, %v; want it taken over by c", j, err)
	}
}
