package e2e

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob/s3/s3test"
)

// TestServiceTorture runs three csbs serve nodes on one PostgreSQL schema
// and one versitygw bucket, each with a server of its own, and for a while
// (CSBS_TORTURE_SECONDS, default 20) backs up, restores and deletes at
// random through the API of any live node while SIGKILLing nodes at random
// and starting them again. Afterwards every backup the service reported
// available (and that was not deleted) restores its server's disk
// byte-exactly, and every restore that reported success had put the
// backup's bytes back. CSBS_TORTURE_SEED replays the schedule of actions.
func TestServiceTorture(t *testing.T) {
	if testing.Short() {
		t.Skip("torture test skipped in -short mode")
	}
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CSBS_TORTURE_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	secs := 20
	if s := os.Getenv("CSBS_TORTURE_SECONDS"); s != "" {
		secs, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d (CSBS_TORTURE_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, 3))

	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	shared := t.TempDir()
	names := []string{"a", "b", "c"}
	nodes := map[string]*env{}
	servers := map[string]string{} // node → its server
	disks := map[string]string{}   // server → its disk image
	var database string
	for _, n := range names {
		e := newEnv(t, "--node-name", n, "--node-heartbeat", "500ms",
			"--repository-url", "s3://"+bucket+"/torture",
			"--repository-s3-endpoint", srv.Endpoint, "--repository-s3-region", s3test.Region,
			"--repository-password-file", filepath.Join(shared, "repository.key"))
		e.environ = []string{"AWS_ACCESS_KEY_ID=" + s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.SecretKey}
		if database == "" {
			database = e.withPostgres().database
		}
		e.database = database
		id := newUUID()
		p := e.addServer(id, project, "ACTIVE", 4*mib)
		fillRandom(t, p[0], 4*mib)
		nodes[n], servers[n], disks[id] = e, id, p[0]
	}
	for _, n := range names {
		nodes[n].start() // a first: it creates the repository and its password file
	}
	alive := map[string]bool{"a": true, "b": true, "c": true}
	live := func() *env {
		for {
			if n := names[rng.IntN(len(names))]; alive[n] {
				return nodes[n]
			}
		}
	}

	type backup struct{ id, checkpoint, server, hash string }
	var (
		pending   = map[string]backup{} // backups asked for, not yet ended
		available = map[string]backup{} // reported available, not deleted
		restores  = map[string]backup{} // restores running: restore id → the backup
		busy      = map[string]bool{}   // servers with a backup or restore running
		dead      = map[string]time.Time{}
		kills     int
		restored  int
		asked     int
		failed    int
	)
	// settle looks at what is running through a live node.
	settle := func() {
		e := live()
		for id, b := range pending {
			it := e.item(project, id)
			switch {
			case it == nil:
				t.Fatalf("backup %s vanished while running", id)
			case it["status"] == "available":
				available[id] = b
			case it["status"] == "error":
				failed++
			default:
				continue
			}
			delete(pending, id)
			busy[b.server] = false
		}
		for rid, b := range restores {
			r := e.do("GET", "/v1/"+project+"/restores/"+rid, nil)
			if r.status != 200 {
				t.Fatalf("restore %s: %d %s", rid, r.status, r.body)
			}
			switch st := r.json(t)["restore"].(map[string]any)["status"]; st {
			case "in_progress":
				continue
			case "success":
				if got := fileHash(t, disks[b.server]); got != b.hash {
					t.Fatalf("restore %s reported success but the disk does not hold the backup's bytes", rid)
				}
				restored++
			}
			delete(restores, rid)
			busy[b.server] = false
		}
	}

	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		for n, at := range dead {
			if time.Since(at) > 1500*time.Millisecond {
				nodes[n].start()
				alive[n] = true
				delete(dead, n)
			}
		}
		settle()
		n := names[rng.IntN(len(names))]
		server := servers[n]
		switch op := rng.IntN(10); {
		case op < 5 && !busy[server]:
			scribble(t, disks[server])
			b := backup{server: server, hash: fileHash(t, disks[server])}
			b.checkpoint, b.id = live().protect(project, server, map[string]any{"incremental": rng.IntN(2) == 0})
			pending[b.id], busy[server] = b, true
			asked++
		case op < 6 && !busy[server]:
			for id, b := range available {
				if b.server != server {
					continue
				}
				r := live().do("POST", "/v1/"+project+"/restores", live().restoreBody(b.checkpoint, id, server, false))
				if r.status != 200 {
					t.Fatalf("restore of available backup %s: %d %s", id, r.status, r.body)
				}
				restores[r.json(t)["restore"].(map[string]any)["id"].(string)], busy[server] = b, true
				break
			}
		case op < 7 && len(available) > 3:
			for id, b := range available {
				if busy[b.server] {
					continue // a backup being restored cannot be deleted (CSBS.2003)
				}
				if r := live().do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+b.checkpoint, nil); r.status != 200 {
					t.Fatalf("delete %s: %d %s", id, r.status, r.body)
				}
				delete(available, id)
				break
			}
		case op >= 8:
			if len(dead) == 0 { // one node down at a time: every server's node comes back soon
				nodes[n].stop(syscall.SIGKILL)
				alive[n], dead[n] = false, time.Now()
				kills++
			}
		}
	}
	for n := range dead {
		nodes[n].start()
		alive[n] = true
	}
	end := time.Now().Add(120 * time.Second)
	for len(pending)+len(restores) > 0 {
		if time.Now().After(end) {
			t.Fatalf("backups %v and restores %v still running 120 s after the last kill", pending, restores)
		}
		time.Sleep(200 * time.Millisecond)
		settle()
	}

	// Every backup reported available restores byte-exactly.
	for id, b := range available {
		scribble(t, disks[b.server])
		live().restoreOK(project, live().restoreBody(b.checkpoint, id, b.server, false))
		if got := fileHash(t, disks[b.server]); got != b.hash {
			t.Fatalf("backup %s, reported available, restores to other bytes", id)
		}
	}
	t.Logf("%d kills, %d backups asked for (%d ended in error), %d restores checked during the run, %d available backups restored at the end",
		kills, asked, failed, restored, len(available))
	if len(available) == 0 {
		t.Error("no backup was available at the end: the run tested nothing")
	}
}
