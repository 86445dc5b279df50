package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cluster is csbs nodes sharing one PostgreSQL schema and one repository
// directory, each with its own inventory and disk images.
type cluster struct {
	t     *testing.T
	nodes map[string]*env
	db    *sql.DB
}

func newCluster(t *testing.T, names ...string) *cluster {
	t.Helper()
	shared := t.TempDir()
	c := &cluster{t: t, nodes: map[string]*env{}}
	var database string
	for _, n := range names {
		e := newEnv(t, "--node-name", n, "--node-heartbeat", "500ms", "--policies-tick", "1s",
			"--repository-path", filepath.Join(shared, "repository"),
			"--repository-password-file", filepath.Join(shared, "repository.key"))
		if database == "" {
			database = e.withPostgres().database
		}
		e.database = database
		c.nodes[n] = e
	}
	db, err := sql.Open("pgx", database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c.db = db
	return c
}

// jobOf returns the node and the lease owner of the newest job of a backup.
func (c *cluster) jobOf(itemID, kind string) (node, owner string, attempt int) {
	c.t.Helper()
	err := c.db.QueryRow(`SELECT node, lease_owner, attempt FROM jobs WHERE item_id = $1 AND kind = $2
		ORDER BY created_at DESC LIMIT 1`, itemID, kind).Scan(&node, &owner, &attempt)
	if err != nil {
		c.t.Fatalf("job of backup %s: %v", itemID, err)
	}
	return node, owner, attempt
}

// ranOn fails unless the newest job of kind of a backup was placed on node
// and run by a process of that node.
func (c *cluster) ranOn(itemID, kind, node string) {
	c.t.Helper()
	n, owner, _ := c.jobOf(itemID, kind)
	if n != node || !strings.HasPrefix(owner, node+"/") {
		c.t.Errorf("%s job of backup %s placed on node %q and run by %q; want node %s", kind, itemID, n, owner, node)
	}
}

// TestMultiNode runs three nodes on one database and one repository: every
// node serves the whole API, each backup and restore runs on the node that
// has the server's disks, a scheduled policy fires once with each backup on
// its node, and a node killed in the middle of a backup leaves that backup
// waiting (saying for which node) while the other nodes go on; restarted,
// the node finishes it and it restores byte-exactly.
func TestMultiNode(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	a, b, cc := c.nodes["a"], c.nodes["b"], c.nodes["c"]
	sa, sb, big, sc := newUUID(), newUUID(), newUUID(), newUUID()
	a.addServer(sa, project, "ACTIVE", 8*mib)
	sbPaths := b.addServer(sb, project, "ACTIVE", 8*mib, 4*mib)
	// Big enough that its backup is still running when its node is killed.
	bigPaths := b.addServer(big, project, "ACTIVE", 384*mib)
	fillRandom(t, bigPaths[0], 384*mib)
	bigHash := fileHash(t, bigPaths[0])
	cc.addServer(sc, project, "ACTIVE", 8*mib)
	a.start() // the first node creates the repository and its password file
	b.start()
	cc.start()

	// A scheduled policy over servers of nodes a and c, created through b;
	// it fires while the rest of the test runs.
	fire := nextMinute()
	rule := fmt.Sprintf("FREQ=DAILY;BYHOUR=%d;BYMINUTE=%d", fire.Hour(), fire.Minute())
	policyID := b.polCreate(project, polBody("sched", true, rule, nil, sa, sc))["id"].(string)

	// Every node knows every server.
	r := cc.do("POST", "/v1/"+project+"/providers/"+provider+"/resources/action",
		`{"check_protectable": [{"resource_id": "`+sb+`", "resource_type": "OS::Nova::Server"},
			{"resource_id": "`+newUUID()+`", "resource_type": "OS::Nova::Server"}]}`)
	if r.status != 200 {
		t.Fatalf("check_protectable through c: %d %s", r.status, r.body)
	}
	pr := r.json(t)["protectable"].([]any)
	if pr[0].(map[string]any)["result"] != true || pr[1].(map[string]any)["result"] != false {
		t.Fatalf("check_protectable through c of b's server and of an unknown one: %v", pr)
	}

	// Backups requested through another node's API run on the server's node.
	_, ia := cc.protect(project, sa, nil)
	_, ib := a.protect(project, sb, nil)
	_, ic := b.protect(project, sc, nil)
	for id, node := range map[string]string{ia: "a", ib: "b", ic: "c"} {
		it := a.waitStatus(project, id, 60*time.Second, "available", "error")
		if it["status"] != "available" {
			t.Fatalf("backup %s (node %s) ended %v: %v", id, node, it["status"], it["extend_info"])
		}
		c.ranOn(id, "protect", node)
	}
	if n := cc.count(project, ""); n != 3 {
		t.Fatalf("node c counts %d backups, want 3", n)
	}

	// A restore through c of b's server runs on b and puts the bytes back.
	sbWant := hashes(t, sbPaths)
	for _, p := range sbPaths {
		scribble(t, p)
	}
	cc.restoreOK(project, cc.restoreBody("", ib, sb, false))
	sameHashes(t, "b's server restored through c", sbPaths, sbWant)
	c.ranOn(ib, "restore", "b")

	// Kill b in the middle of the backup of its big server: as soon as its
	// job has started (it takes a few hundred ms; a try that ends before it
	// is seen running is repeated, as a full backup). The backup is watched
	// through b itself: another node's answer may be up to a second old (its
	// response cache sees only its own writes), longer than the backup.
	var ibig string
	for try := 0; ibig == ""; try++ {
		if try == 3 {
			t.Fatal("three backups of the big server ended before they were seen running")
		}
		_, id := a.protect(project, big, map[string]any{"incremental": false})
		for {
			r := b.do("GET", "/v1/"+project+"/checkpoint_items/"+id, nil)
			var st struct {
				Item struct {
					Status     string
					ExtendInfo struct{ Queued bool } `json:"extend_info"`
				} `json:"checkpoint_item"`
			}
			if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 {
				t.Fatalf("get %s: %d %s", id, r.status, r.body)
			}
			if st.Item.Status != "protecting" {
				break
			}
			if !st.Item.ExtendInfo.Queued { // running, no longer waiting for a worker
				ibig = id
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	b.stop(syscall.SIGKILL)
	killed := time.Now()

	// Its backup waits for b and says so; the status stays protecting.
	var wait map[string]any
	for wait == nil {
		it := a.item(project, ibig)
		if it["status"] != "protecting" {
			t.Fatalf("with its node down the backup is %v, want protecting: %v", it["status"], it["extend_info"])
		}
		wait, _ = it["extend_info"].(map[string]any)["waiting_for_node"].(map[string]any)
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("30 s after node b was killed its backup does not say it waits: %v", it["extend_info"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen, err := time.Parse("2006-01-02T15:04:05.000000", wait["last_seen"].(string))
	if wait["node"] != "b" || err != nil || seen.After(killed) || killed.Sub(seen) > 5*time.Second ||
		!strings.Contains(wait["reason"].(string), "node b") {
		t.Fatalf("waiting_for_node = %v (killed at %s); want node b, last seen just before the kill", wait, killed.UTC().Format(time.TimeOnly))
	}
	if it := cc.list(project, "status=protecting"); len(it) != 1 || it[0]["extend_info"].(map[string]any)["waiting_for_node"] == nil {
		t.Fatalf("the list through c does not show the wait: %v", it)
	}

	// Meanwhile the other nodes' backups proceed.
	_, ia2 := cc.protect(project, sa, nil)
	_, ic2 := a.protect(project, sc, nil)
	for _, id := range []string{ia2, ic2} {
		if it := cc.waitStatus(project, id, 60*time.Second, "available", "error"); it["status"] != "available" {
			t.Fatalf("backup %s with node b down ended %v: %v", id, it["status"], it["extend_info"])
		}
	}
	if it := a.item(project, ibig); it["status"] != "protecting" {
		t.Fatalf("b's backup is %v while b is down, want protecting", it["status"])
	}

	// b is back: its backup resumes there, completes and restores byte-exactly.
	b.start()
	it := cc.waitStatus(project, ibig, 120*time.Second, "available", "error")
	if it["status"] != "available" {
		t.Fatalf("after b came back its backup ended %v: %v", it["status"], it["extend_info"])
	}
	if _, ok := it["extend_info"].(map[string]any)["waiting_for_node"]; ok {
		t.Errorf("a finished backup still says it waits: %v", it["extend_info"])
	}
	if node, owner, attempt := c.jobOf(ibig, "protect"); node != "b" || !strings.HasPrefix(owner, "b/") || attempt != 2 {
		t.Errorf("the big backup's job: node %s owner %s attempt %d; want b, b/…, 2 (resumed once)", node, owner, attempt)
	}
	scribble(t, bigPaths[0])
	a.restoreOK(project, a.restoreBody("", ibig, big, false))
	sameHashes(t, "the big server restored through a", bigPaths, []string{bigHash})

	// The scheduled fire: once, one backup of each server, each on its node.
	autos := map[string]string{} // server -> backup
	for time.Now().Before(fire.Add(90 * time.Second)) {
		for _, it := range b.list(project, "policy_id="+policyID) {
			if it["extend_info"].(map[string]any)["auto_trigger"] == true {
				if prev, ok := autos[it["resource_id"].(string)]; ok && prev != it["id"] {
					t.Fatalf("server %s has two scheduled backups: %s and %s", it["resource_id"], prev, it["id"])
				}
				autos[it["resource_id"].(string)] = it["id"].(string)
			}
		}
		if len(autos) == 2 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(autos) != 2 {
		t.Fatalf("scheduled backups %v by %s, want one of each of 2 servers (fire time %s)", autos, time.Now().UTC().Format(time.TimeOnly), fire.Format(time.TimeOnly))
	}
	for srv, node := range map[string]string{sa: "a", sc: "c"} {
		if it := b.waitStatus(project, autos[srv], 60*time.Second, "available", "error"); it["status"] != "available" {
			t.Fatalf("scheduled backup of node %s's server ended %v: %v", node, it["status"], it["extend_info"])
		}
		c.ranOn(autos[srv], "protect", node)
	}
	time.Sleep(2 * time.Second) // a few more ticks of every node's scheduler
	if n := b.count(project, "policy_id="+policyID); n != 2 {
		t.Errorf("%d backups of the policy after more ticks, want 2", n)
	}
	// (b's log before its restart is gone, so at most one.)
	if n := strings.Count(a.log()+b.log()+cc.log(), "scheduled backup started"); n > 1 {
		t.Errorf("%d nodes started the scheduled backup, want 1", n)
	}
}
