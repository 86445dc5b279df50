package service

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/cluster"
	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/store"
)

// member is node name of a cluster on db whose inventory has servers.
func member(t *testing.T, db store.Store, name string, servers ...string) *cluster.Member {
	t.Helper()
	dir := t.TempDir()
	var inv local.Inventory
	for _, id := range servers {
		img := filepath.Join(dir, id+".img")
		if err := os.WriteFile(img, make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		inv.Servers = append(inv.Servers, local.ServerSpec{ID: id, ProjectID: "p", Status: "ACTIVE",
			Volumes: []local.VolumeSpec{{ID: id + "-v", Path: img, Bootable: true}}})
	}
	path := filepath.Join(dir, "servers.yaml")
	if err := local.WriteInventory(path, inv); err != nil {
		t.Fatal(err)
	}
	drv, err := local.New(path)
	if err != nil {
		t.Fatal(err)
	}
	m := cluster.New(db, drv, cluster.Config{Node: name, Heartbeat: time.Hour})
	if err := m.Beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestJobPlacement: a backup requested on any node is placed on the node
// that has the server; while that node is down the backup says it waits
// for it, and stops saying so when it is back.
func TestJobPlacement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "csbs.db"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a := member(t, db, "a", "sa")
	member(t, db, "b", "sb")
	svc := New(Config{Store: db, Compute: a.Driver()})

	for _, tc := range []struct{ server, node string }{{"sa", "a"}, {"sb", "b"}} {
		cp, err := svc.Protect(ctx, "p", tc.server, ProtectRequest{})
		if err != nil {
			t.Fatalf("protect %s through node a: %v", tc.server, err)
		}
		j, err := db.GetJob(ctx, cp.Items[0].Info.TaskID)
		if err != nil {
			t.Fatal(err)
		}
		if j.Node != tc.node {
			t.Errorf("backup of %s placed on node %q, want %q", tc.server, j.Node, tc.node)
		}
	}
	res, err := svc.CheckProtectable(ctx, "p", []ProtectableCheck{{ResourceID: "sb", ResourceType: ResourceTypeServer}, {ResourceID: "nope", ResourceType: ResourceTypeServer}})
	if err != nil || !res[0].Result || res[1].Result {
		t.Errorf("check_protectable through a of b's server and of an unknown one = %+v, %v", res, err)
	}

	items, err := svc.Items(ctx, "p", store.ItemFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Info.WaitingFor != nil {
			t.Errorf("backup of %s waits for %+v while every node is up", it.ResourceID, it.Info.WaitingFor)
		}
	}
	if err := db.HeartbeatNode(ctx, "b", -time.Minute); err != nil { // b went down a minute ago
		t.Fatal(err)
	}
	items, _ = svc.Items(ctx, "p", store.ItemFilter{})
	for _, it := range items {
		w := it.Info.WaitingFor
		switch it.ResourceID {
		case "sa":
			if w != nil {
				t.Errorf("backup of a's server waits for %+v", w)
			}
		case "sb":
			if w == nil || w.Node != "b" || w.LastSeen.IsZero() {
				t.Errorf("backup of b's server with b down: WaitingFor = %+v; want node b and when it was last seen", w)
			}
			one, err := svc.Item(ctx, "p", it.ID)
			if err != nil || one.Info.WaitingFor == nil {
				t.Errorf("Item of b's backup: %+v, %v; want it waiting too", one, err)
			}
		}
	}
	if err := db.HeartbeatNode(ctx, "b", time.Hour); err != nil { // b is back
		t.Fatal(err)
	}
	items, _ = svc.Items(ctx, "p", store.ItemFilter{ResourceID: "sb"})
	if len(items) != 1 || items[0].Info.WaitingFor != nil {
		t.Errorf("b is back, its backup still waits: %+v", items[0].Info.WaitingFor)
	}
}

// TestSingleNodeJobsUnplaced: without the cluster view (one node, SQLite)
// jobs carry no node, so every process runs them as before.
func TestSingleNodeJobsUnplaced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svcs, _, db := schedEnv(t)
	svc := New(Config{Store: db, Compute: svcs[0].compute})
	cp, err := svc.Protect(ctx, "p", "11111111-1111-1111-1111-111111111111", ProtectRequest{})
	if err != nil {
		t.Fatal(err)
	}
	j, err := db.GetJob(ctx, cp.Items[0].Info.TaskID)
	if err != nil || j.Node != "" {
		t.Fatalf("single-node backup job = %+v, %v; want no node", j, err)
	}
	if c, err := db.ClaimJob(ctx, "w", "", time.Minute); err != nil || c == nil || c.ID != j.ID {
		t.Fatalf("ClaimJob of one node = %+v, %v; want the backup job", c, err)
	}
}
