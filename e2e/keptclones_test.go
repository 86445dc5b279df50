package e2e

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/api"
	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/compute/local/xfstest"
	"github.com/csbs/csbs/internal/openapi"
)

// keptList is what `csbs kept-clones list|drop -o json` prints.
type keptList struct {
	Node           string `json:"node"`
	Count          int    `json:"count"`
	ApparentBytes  int64  `json:"apparent_bytes"`
	ExclusiveBytes int64  `json:"exclusive_bytes"`
	Clones         []struct {
		ServerID       string `json:"server_id"`
		ProjectID      string `json:"project_id"`
		VolumeID       string `json:"volume_id"`
		VolumeName     string `json:"volume_name"`
		BackupID       string `json:"backup_id"`
		Path           string `json:"path"`
		Source         string `json:"source"`
		ApparentBytes  int64  `json:"apparent_bytes"`
		ExclusiveBytes int64  `json:"exclusive_bytes"`
	} `json:"kept_clones"`
}

func keptCLI(t *testing.T, conn []string, args ...string) keptList {
	t.Helper()
	r := cli(t, conn, append([]string{"kept-clones"}, append(args, "-o", "json")...)...).must(t, "kept-clones "+strings.Join(args, " "))
	var k keptList
	if err := json.Unmarshal([]byte(r.stdout), &k); err != nil {
		t.Fatalf("kept-clones %v printed no JSON: %v\n%s", args, err, r.stdout)
	}
	return k
}

// freeBytes is what the file system at dir has free, once what was
// removed has really been freed.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	unix.Sync()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bfree) * st.Bsize
}

// TestKeptClonesCLI: `csbs kept-clones list` shows, per server and disk,
// what each kept clone costs, and the figures are the files' own (size by
// stat; exclusive bytes within the blocks stat says the clone has, and
// equal to the space `drop` frees on the file system); `drop` removes them;
// the next backup then reads every disk whole, says why, and restores byte
// for byte.
func TestKeptClonesCLI(t *testing.T) {
	mnt := xfstest.Mount(t)
	e := newEnv(t)
	e.dir = mnt
	paths := e.addServer(serverID, project, "SHUTOFF", 48*mib, 16*mib)
	e.start()
	conn := []string{"CSBS_ENDPOINT=" + e.base, "CSBS_PROJECT_ID=" + project}

	if k := keptCLI(t, conn, "list"); k.Count != 0 || len(k.Clones) != 0 {
		t.Fatalf("before any backup: %+v, want no kept clone", k)
	}
	_, full := e.protect(project, serverID, map[string]any{"backup_name": "full"})
	e.waitStatus(project, full, time.Minute, "available")

	// Rewrite 8 MiB of the first disk in place: its clone alone holds the
	// old blocks now.
	f, err := os.OpenFile(paths[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fillRandomAt(t, f, 24*mib, 8*mib) // allocated: random data since the image was made
	f.Close()

	k := keptCLI(t, conn, "list")
	if k.Count != 2 || len(k.Clones) != 2 {
		t.Fatalf("after a backup of two disks: %+v, want two kept clones", k)
	}
	var sumA, sumE int64
	for i, c := range k.Clones {
		want := e.inv.Servers[0].Volumes[i]
		if c.ServerID != serverID || c.ProjectID != project || c.VolumeID != want.ID || c.VolumeName != want.Name || c.BackupID != full || c.Source != want.Path {
			t.Errorf("clone %d: %+v, want of %s/%s (%s) from backup %s", i, c, serverID, want.ID, want.Name, full)
		}
		var st unix.Stat_t
		if err := unix.Stat(c.Path, &st); err != nil || filepath.Base(filepath.Dir(c.Path)) != local.KeptDirName {
			t.Fatalf("clone %d at %s: %v", i, c.Path, err)
		}
		if c.ApparentBytes != st.Size {
			t.Errorf("clone %d: apparent_bytes %d, stat says %d", i, c.ApparentBytes, st.Size)
		}
		if c.ExclusiveBytes > st.Blocks*512 {
			t.Errorf("clone %d: exclusive_bytes %d, more than the %d bytes of blocks it has", i, c.ExclusiveBytes, st.Blocks*512)
		}
		sumA += c.ApparentBytes
		sumE += c.ExclusiveBytes
	}
	if k.ApparentBytes != 64*mib || k.ApparentBytes != sumA || k.ExclusiveBytes != sumE {
		t.Errorf("totals %d apparent, %d exclusive; want 64 MiB, the sums %d and %d", k.ApparentBytes, k.ExclusiveBytes, sumA, sumE)
	}
	if e0, e1 := k.Clones[0].ExclusiveBytes, k.Clones[1].ExclusiveBytes; e0 < 8*mib || e0 > 9*mib || e1 > 64<<10 {
		t.Errorf("exclusive bytes %d and %d; want the 8 MiB rewritten on the first disk, (almost) nothing on the second", e0, e1)
	}
	// The table names the disks and the totals.
	table := cli(t, conn, "kept-clones", "list").must(t, "kept-clones list").stdout
	t.Logf("csbs kept-clones list:\n%s", table)
	for _, s := range []string{"EXCLUSIVE_BYTES", k.Clones[0].VolumeID, k.Clones[1].VolumeID, "2 clones kept: 64.0 MiB apparent"} {
		if !strings.Contains(table, s) {
			t.Errorf("kept-clones list table lacks %q:\n%s", s, table)
		}
	}
	// The answer fits the API's description.
	doc, err := openapi.Parse(api.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	schema, _, _ := doc.Response("GET", "/v1/{project_id}/kept_clones", "200")
	r := e.do("GET", "/v1/"+project+"/kept_clones?server_id="+serverID, nil)
	var got any
	if r.status != 200 || json.Unmarshal(r.body, &got) != nil {
		t.Fatalf("GET kept_clones: %d %s", r.status, r.body)
	}
	for _, err := range doc.Check(schema, got, "") {
		t.Errorf("GET kept_clones does not fit the schema: %v", err)
	}
	if r := e.do("GET", "/v1/"+project+"/kept_clones?server_id="+newUUID(), nil); r.status != 200 || !strings.Contains(string(r.body), `"count":0`) {
		t.Errorf("kept clones of another server: %d %s, want none", r.status, r.body)
	}
	if r := cli(t, conn, "kept-clones", "drop"); r.code == 0 || !strings.Contains(r.stderr, "--all") {
		t.Errorf("drop without a selection: exit %d, %s; want a refusal naming --all", r.code, r.stderr)
	}

	// Dropping frees what they held alone.
	before := freeBytes(t, mnt)
	d := keptCLI(t, conn, "drop", "--server", serverID)
	if d.Count != 2 || d.ExclusiveBytes != k.ExclusiveBytes {
		t.Errorf("drop answered %+v; want the two clones, %d exclusive bytes", d, k.ExclusiveBytes)
	}
	var freed int64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		// XFS frees an unlinked file's blocks in the background.
		if freed = freeBytes(t, mnt) - before; freed >= d.ExclusiveBytes || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("drop: exclusive_bytes %d, the file system's free space grew by %d", d.ExclusiveBytes, freed)
	if freed < d.ExclusiveBytes || freed > d.ExclusiveBytes+256<<10 {
		t.Errorf("dropping freed %d bytes on the file system; exclusive_bytes said %d", freed, d.ExclusiveBytes)
	}
	for _, c := range k.Clones {
		if _, err := os.Stat(c.Path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there after the drop (%v)", c.Path, err)
		}
	}
	if k := keptCLI(t, conn, "list"); k.Count != 0 {
		t.Errorf("after the drop: %+v, want none", k)
	}

	// The next backup reads every disk whole, says why, and restores.
	want := hashes(t, paths)
	_, next := e.protect(project, serverID, map[string]any{"backup_name": "after-drop"})
	ni := e.waitStatus(project, next, time.Minute, "available")
	for _, v := range ni["extend_info"].(map[string]any)["volume_backups"].([]any) {
		vb := v.(map[string]any)
		if reason := vb["read_reason"].(string); !strings.HasPrefix(reason, "full read: no kept clone") {
			t.Errorf("backup after the drop, disk %v: read_reason %q; want a full read for want of a kept clone", vb["source_volume_id"], reason)
		}
	}
	for _, p := range paths {
		scribble(t, p)
	}
	e.restoreOK(project, e.restoreBody("", next, serverID, false))
	sameHashes(t, "restore of the backup after the drop", paths, want)
	if k := keptCLI(t, conn, "list"); k.Count != 2 {
		t.Errorf("after the next backup: %d kept clones, want 2 again", k.Count)
	}
}

// fillRandomAt writes n random bytes at off and syncs.
func fillRandomAt(t *testing.T, f *os.File, off, n int64) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
