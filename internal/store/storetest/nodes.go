package storetest

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/store"
)

// testNodeHeartbeat: a node is up until its heartbeat expires; a beat after
// it was down starts a new run (StartedAt moves), a beat while up does not.
func testNodeHeartbeat(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	if ns, err := s.ListNodes(ctx); err != nil || len(ns) != 0 {
		t.Fatalf("ListNodes of a new database = %v, %v", ns, err)
	}
	if err := s.HeartbeatNode(ctx, "b", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.HeartbeatNode(ctx, "a", -time.Minute); err != nil { // beat long ago: down
		t.Fatal(err)
	}
	ns, err := s.ListNodes(ctx)
	if err != nil || len(ns) != 2 || ns[0].Name != "a" || ns[1].Name != "b" {
		t.Fatalf("ListNodes = %+v, %v; want a, b", ns, err)
	}
	now := time.Now()
	if ns[0].Up(now) || !ns[1].Up(now) {
		t.Errorf("Up: a %v b %v; want a down (expired), b up", ns[0].Up(now), ns[1].Up(now))
	}
	b1 := ns[1]
	if err := s.HeartbeatNode(ctx, "b", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.HeartbeatNode(ctx, "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	ns, _ = s.ListNodes(ctx)
	if !ns[1].StartedAt.Equal(b1.StartedAt) || !ns[1].HeartbeatAt.After(b1.HeartbeatAt) {
		t.Errorf("b beat while up: started %v→%v, beat %v→%v; want started kept, beat later", b1.StartedAt, ns[1].StartedAt, b1.HeartbeatAt, ns[1].HeartbeatAt)
	}
	if !ns[0].Up(time.Now()) || !ns[0].StartedAt.Equal(ns[0].HeartbeatAt) {
		t.Errorf("a came back: %+v; want up, started at its new beat", ns[0])
	}
}

// testPublishServers: a node's servers replace its earlier ones, other
// nodes' stay; lookups by project and server carry the node's state.
func testPublishServers(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	srv := func(id, projectID string) store.PlacedServer {
		b, _ := json.Marshal(map[string]string{"ID": id, "ProjectID": projectID})
		return store.PlacedServer{ServerID: id, ProjectID: projectID, Server: b}
	}
	if err := s.HeartbeatNode(ctx, "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.PublishServers(ctx, "a", []store.PlacedServer{srv("s1", project), srv("s2", project), srv("s3", other)}); err != nil {
		t.Fatal(err)
	}
	// b was never seen beating: its servers are placed on a node that is down.
	if err := s.PublishServers(ctx, "b", []store.PlacedServer{srv("s4", project), srv("s1", project)}); err != nil {
		t.Fatal(err)
	}
	// a republishes: s2 is gone from its inventory.
	if err := s.PublishServers(ctx, "a", []store.PlacedServer{srv("s1", project), srv("s3", other)}); err != nil {
		t.Fatal(err)
	}
	key := func(ps []store.PlacedServer) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Node.Name+"/"+p.ProjectID+"/"+p.ServerID)
		}
		return out
	}
	for _, tc := range []struct {
		project, server string
		want            []string
	}{
		{project, "", []string{"a/p1/s1", "b/p1/s1", "b/p1/s4"}},
		{other, "", []string{"a/p2/s3"}},
		{"", "", []string{"a/p1/s1", "b/p1/s1", "a/p2/s3", "b/p1/s4"}},
		{project, "s1", []string{"a/p1/s1", "b/p1/s1"}},
		{project, "s2", nil},
		{other, "s1", nil},
	} {
		got, err := s.PlacedServers(ctx, tc.project, tc.server)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(key(got), tc.want) {
			t.Errorf("PlacedServers(%q, %q) = %v; want %v", tc.project, tc.server, key(got), tc.want)
		}
	}
	got, _ := s.PlacedServers(ctx, project, "s1")
	now := time.Now()
	if len(got) != 2 || !got[0].Node.Up(now) || got[1].Node.Up(now) || !got[1].Node.HeartbeatAt.IsZero() {
		t.Fatalf("node state of s1's placements: %+v; want a up, b never seen", got)
	}
	var m map[string]string
	if err := json.Unmarshal(got[0].Server, &m); err != nil || m["ID"] != "s1" {
		t.Errorf("published server document = %s, %v", got[0].Server, err)
	}
	// Processes of one node publishing at once: no conflict, one set.
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			errs <- s.PublishServers(ctx, "a", []store.PlacedServer{srv("s1", project), srv("s3", other)})
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent PublishServers of one node: %v", err)
		}
	}
	if got, _ := s.PlacedServers(ctx, "", ""); len(got) != 4 {
		t.Errorf("after concurrent publishing: %v", key(got))
	}
	if err := s.PublishServers(ctx, "a", nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.PlacedServers(ctx, "", ""); !reflect.DeepEqual(key(got), []string{"b/p1/s1", "b/p1/s4"}) {
		t.Errorf("after a published nothing: %v", key(got))
	}
}

// testClaimByNode is the placement rule of the queue: a node claims its own
// jobs and jobs of no node, never another node's; a claimer of no node (a
// single-node installation) claims everything.
func testClaimByNode(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		node  string
		jobs  []string // node of each job, oldest first
		wants []string // nodes of the jobs claimed, in order
	}{
		{"own and unplaced", "a", []string{"b", "a", "", "b"}, []string{"a", ""}},
		{"only others'", "a", []string{"b", "c"}, nil},
		{"single node takes all", "", []string{"b", "a", ""}, []string{"b", "a", ""}},
		{"unplaced only", "c", []string{""}, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fresh(t, newDB)
			for i, n := range tc.jobs {
				if err := s.InsertJob(ctx, &store.Job{Kind: "protect", Node: n, CreatedAt: at(i)}); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for {
				j, err := s.ClaimJob(ctx, "w-"+tc.node, tc.node, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				if j == nil {
					break
				}
				got = append(got, j.Node)
			}
			if !slices.Equal(got, tc.wants) {
				t.Errorf("node %q claimed jobs of nodes %q; want %q", tc.node, got, tc.wants)
			}
		})
	}

	// A node's job cut short (its lease expired: the node was killed) is
	// resumed by that node only.
	s := fresh(t, newDB)
	j := &store.Job{Kind: "protect", Node: "b"}
	if err := s.InsertJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	if c, err := s.ClaimJob(ctx, "b/1", "b", -time.Minute); err != nil || c == nil {
		t.Fatalf("first claim by b = %v, %v", c, err)
	}
	if c, err := s.ClaimJob(ctx, "a/1", "a", time.Hour); err != nil || c != nil {
		t.Fatalf("a claimed b's expired job: %+v, %v", c, err)
	}
	c, err := s.ClaimJob(ctx, "b/2", "b", time.Hour)
	if err != nil || c == nil || c.ID != j.ID || c.Attempt != 2 {
		t.Fatalf("b back: claim = %+v, %v; want its job, attempt 2", c, err)
	}
}

// testNodeWaits: a backup whose pending job is placed on a node that is
// down (or never seen) waits for it; finished jobs, unplaced jobs and jobs
// of nodes that are up do not.
func testNodeWaits(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	if err := s.HeartbeatNode(ctx, "up", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.HeartbeatNode(ctx, "down", -time.Minute); err != nil {
		t.Fatal(err)
	}
	nodes, _ := s.ListNodes(ctx)
	downSeen := nodes[0].HeartbeatAt
	for _, j := range []*store.Job{
		{ItemID: "i-up", Node: "up"},
		{ItemID: "i-down", Node: "down"},
		{ItemID: "i-never", Node: "never"},
		{ItemID: "i-any", Node: ""},
		{ItemID: "i-done", Node: "down", Status: store.JobSucceeded},
	} {
		j.Kind = "protect"
		if err := s.InsertJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.NodeWaits(ctx, []string{"i-up", "i-down", "i-never", "i-any", "i-done", "i-none"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]store.NodeWait{
		"i-down":  {Node: "down", LastSeen: downSeen},
		"i-never": {Node: "never"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NodeWaits = %+v; want %+v", got, want)
	}
	if got, err := s.NodeWaits(ctx, nil, time.Now()); err != nil || len(got) != 0 {
		t.Errorf("NodeWaits of no item = %v, %v", got, err)
	}
}

// testAdoptJobs: a node takes over the waiting jobs of its servers from a
// node that is down or was never seen (the server moved, the node was
// renamed), but never a job of a node that is up, a job whose lease still
// holds, or a job of a server it does not publish.
func testAdoptJobs(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	s := fresh(t, newDB)
	for _, n := range []struct {
		name string
		ttl  time.Duration
	}{{"a", time.Hour}, {"up", time.Hour}, {"down", -time.Minute}} {
		if err := s.HeartbeatNode(ctx, n.name, n.ttl); err != nil {
			t.Fatal(err)
		}
	}
	// a publishes s1 (project p1) only.
	if err := s.PublishServers(ctx, "a", []store.PlacedServer{{ServerID: "s1", ProjectID: project, Server: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	b1 := addItem(t, s, &store.Item{Name: "b1", ResourceID: "s1", Status: store.StatusProtecting})
	b2 := addItem(t, s, &store.Item{Name: "b2", ResourceID: "s2", Status: store.StatusProtecting})
	b3 := addItem(t, s, &store.Item{Name: "b3", ResourceID: "s1", ProjectID: other})
	b4 := addItem(t, s, &store.Item{Name: "b4", ResourceID: "s2"}) // its restore targets s1
	rs := &store.Restore{ProjectID: project, ItemID: b4.ID, ServerID: "s1", CreatedAt: base}
	if err := s.InsertRestore(ctx, rs); err != nil {
		t.Fatal(err)
	}
	jobs := map[string]*store.Job{
		"s1 on down, queued":           {ItemID: b1.ID, Node: "down"},
		"s1 on never seen, queued":     {ItemID: b1.ID, Node: "gone"},
		"s1 on down, lease expired":    {ItemID: b1.ID, Node: "down", Status: store.JobRunning, LeaseUntil: time.Now().Add(-time.Minute)},
		"s1 on down, lease holds":      {ItemID: b1.ID, Node: "down", Status: store.JobRunning, LeaseUntil: time.Now().Add(time.Hour)},
		"s1 on up node":                {ItemID: b1.ID, Node: "up"},
		"s1 on down, finished":         {ItemID: b1.ID, Node: "down", Status: store.JobSucceeded},
		"s2 on down":                   {ItemID: b2.ID, Node: "down"},
		"s1 of another project":        {ItemID: b3.ID, Node: "down"},
		"restore onto s1, on down":     {ItemID: b4.ID, RestoreID: rs.ID, Node: "down"},
		"unplaced":                     {ItemID: b1.ID},
		"s1 on a already":              {ItemID: b1.ID, Node: "a"},
		"restore of s1's backup, else": {ItemID: b1.ID, RestoreID: "no-such-restore", Node: "down"},
	}
	adopt := map[string]bool{"s1 on down, queued": true, "s1 on never seen, queued": true, "s1 on down, lease expired": true, "restore onto s1, on down": true}
	for _, j := range jobs {
		j.Kind = "protect"
		if err := s.InsertJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.AdoptJobs(ctx, "a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n != len(adopt) {
		t.Errorf("AdoptJobs moved %d jobs, want %d", n, len(adopt))
	}
	for name, j := range jobs {
		got, err := s.GetJob(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := j.Node
		if adopt[name] {
			want = "a"
		}
		if got.Node != want {
			t.Errorf("%s: job on node %q after AdoptJobs, want %q", name, got.Node, want)
		}
	}
}
