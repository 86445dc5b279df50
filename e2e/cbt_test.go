package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/compute/local/xfstest"
)

// TestExtentComparison backs up a disk image on a reflink XFS through the
// API: the second backup reads only the chunks written since the first,
// found by comparing the kept clone's extents with the new clone's, says
// so in extend_info, and restores byte for byte. The kept clone shows in
// /metrics and goes with the server's last backup.
func TestExtentComparison(t *testing.T) {
	mnt := xfstest.Mount(t)
	e := newEnv(t)
	e.dir = mnt // the disk images
	paths := e.addServer(serverID, project, "ACTIVE", 64*mib)
	e.start()

	_, full := e.protect(project, serverID, map[string]any{"backup_name": "full"})
	fi := e.waitStatus(project, full, time.Minute, "available")
	fei := fi["extend_info"].(map[string]any)
	fvb := fei["volume_backups"].([]any)[0].(map[string]any)
	if fei["snapshot_method"] != "reflink" || !strings.HasPrefix(fvb["read_reason"].(string), "full read: ") {
		t.Fatalf("first backup: method %v, read_reason %v; want reflink, a full read", fei["snapshot_method"], fvb["read_reason"])
	}
	if m := e.scrape(); m["csbs_kept_clones"] != 1 || m["csbs_kept_clones_apparent_bytes"] != 64*mib {
		t.Errorf("after the first backup: kept clones %v of %v bytes, want 1 of 64 MiB", m["csbs_kept_clones"], m["csbs_kept_clones_apparent_bytes"])
	}

	// 4 KiB inside one chunk (1 MiB) and 8 KiB across a chunk border.
	f, err := os.OpenFile(paths[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte(strings.Repeat("new data", 512)), 10*mib+12345)
	f.WriteAt([]byte(strings.Repeat("border!!", 1024)), 32*mib-4096)
	f.Close()
	want := fileHash(t, paths[0])

	_, inc := e.protect(project, serverID, map[string]any{"backup_name": "inc"})
	ii := e.waitStatus(project, inc, time.Minute, "available")
	iei := ii["extend_info"].(map[string]any)
	vb := iei["volume_backups"].([]any)[0].(map[string]any)
	reason := vb["read_reason"].(string)
	if iei["incremental"] != true || !strings.HasPrefix(reason, "changed extents only: extent comparison with the kept reflink clone of backup ") {
		t.Fatalf("second backup: incremental %v, read_reason %q; want changed extents by extent comparison", iei["incremental"], reason)
	}
	if read := vb["read_bytes"].(float64); read <= 0 || read > 3*mib {
		t.Errorf("second backup read %v bytes, want at most the three 1 MiB chunks written", read)
	}

	// The kept clone shares every block with the disk it was just made
	// of; once the disk is rewritten, it alone holds the old data (18 MiB
	// and the writes above): the space dropping it would free.
	if m := e.scrape(); m["csbs_kept_clones_exclusive_bytes"] >= mib {
		t.Errorf("after the second backup: the kept clone holds %v bytes alone, want (almost) none", m["csbs_kept_clones_exclusive_bytes"])
	}
	// Overwrite the disk, restore the incremental, compare.
	writeImage(t, paths[0], 64*mib, 99, region{0, 64 * mib, "random"})
	unix.Sync()
	if m := e.scrape(); m["csbs_kept_clones_exclusive_bytes"] < 18*mib || m["csbs_kept_clones_exclusive_bytes"] > 64*mib {
		t.Errorf("after the disk was rewritten: the kept clone holds %v bytes alone, want its 18 MiB of data", m["csbs_kept_clones_exclusive_bytes"])
	}
	e.restoreOK(project, e.restoreBody("", inc, serverID, false))
	if got := fileHash(t, paths[0]); got != want {
		t.Fatalf("the restored disk differs from the disk at the second backup")
	}

	// The restore rewrote every block: the next backup still compares
	// extents, and reads (about) everything.
	_, third := e.protect(project, serverID, map[string]any{"backup_name": "third"})
	ti := e.waitStatus(project, third, time.Minute, "available")
	tvb := ti["extend_info"].(map[string]any)["volume_backups"].([]any)[0].(map[string]any)
	if !strings.HasPrefix(tvb["read_reason"].(string), "changed extents only: extent comparison") || tvb["read_bytes"].(float64) < 16*mib {
		t.Errorf("after a restore: read %v bytes (%v), want the rewritten data by extent comparison", tvb["read_bytes"], tvb["read_reason"])
	}

	// Deleting every backup of the server removes its kept clone.
	kept := filepath.Join(mnt, local.KeptDirName)
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("no kept clone directory: %v", err)
	}
	for _, id := range []string{full, inc, third} {
		cp := e.item(project, id)["checkpoint_id"].(string)
		if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cp, nil); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		e.waitStatus(project, id, 30*time.Second, "gone")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(kept)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kept clone outlived the server's last backup")
		}
		time.Sleep(50 * time.Millisecond)
	}
	unix.Sync()
	if m := e.scrape(); m["csbs_kept_clones"] != 0 {
		t.Errorf("after every backup was deleted: %v kept clones", m["csbs_kept_clones"])
	}
}

// TestKeepClonesOff: with compute.local.keep_clones off (here its flag),
// every backup reads its disk whole and says why, and no clone outlives
// its backup.
func TestKeepClonesOff(t *testing.T) {
	mnt := xfstest.Mount(t)
	e := newEnv(t, "--compute-local-keep-clones=false")
	e.dir = mnt
	e.addServer(serverID, project, "ACTIVE", 16*mib) // 10 MiB of data
	e.start()
	for _, name := range []string{"full", "inc"} {
		_, id := e.protect(project, serverID, map[string]any{"backup_name": name})
		ei := e.waitStatus(project, id, time.Minute, "available")["extend_info"].(map[string]any)
		vb := ei["volume_backups"].([]any)[0].(map[string]any)
		reason := vb["read_reason"].(string)
		if ei["snapshot_method"] != "reflink" || !strings.HasPrefix(reason, "full read: ") || vb["read_bytes"].(float64) < 10*mib {
			t.Errorf("%s: method %v, read %v bytes (%q); want a reflink clone read whole", name, ei["snapshot_method"], vb["read_bytes"], reason)
		}
		if name == "inc" && !strings.Contains(reason, "keep_clones is off") {
			t.Errorf("inc: read_reason %q, want it to name compute.local.keep_clones", reason)
		}
		if _, err := os.Stat(filepath.Join(mnt, local.KeptDirName)); !os.IsNotExist(err) {
			t.Errorf("%s: %s exists (%v), want no clone kept", name, local.KeptDirName, err)
		}
		if m := e.scrape(); m["csbs_kept_clones"] != 0 {
			t.Errorf("%s: /metrics shows %v kept clones, want 0", name, m["csbs_kept_clones"])
		}
	}
}
