package e2e

import (
	"os/exec"
	"testing"
	"time"
)

// TestDedupAcrossProjects: two projects back up disks with the same bytes.
// By default (repository.dedup project) the second backup stores its data
// again and its space_saving_ratio tells nothing about the first project;
// with repository.dedup shared it is deduplicated (ratio near 100).
func TestDedupAcrossProjects(t *testing.T) {
	const projB = "0c2a2ef0d1b34ad4a6c1e01fd0ae2a3c"
	for _, tc := range []struct {
		name      string
		flags     []string
		shared    bool
		wantRatio func(float64) bool
	}{
		{"project (default)", nil, false, func(r float64) bool { return r < 10 }},
		{"shared", []string{"--repository-dedup", "shared"}, true, func(r float64) bool { return r > 90 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.flags...)
			pa := e.addServer(serverID, project, "ACTIVE", 16*mib)
			pb := e.addServer(newUUID(), projB, "ACTIVE", 16*mib)
			fillRandom(t, pa[0], 16*mib)
			if out, err := exec.Command("cp", pa[0], pb[0]).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			e.start()
			_, ia := e.protect(project, serverID, nil)
			e.waitStatus(project, ia, 60*time.Second, "available")
			before := e.repoBytes()
			_, ib := e.protect(projB, e.inv.Servers[1].ID, nil)
			it := e.waitStatus(projB, ib, 60*time.Second, "available")
			ratio := it["extend_info"].(map[string]any)["space_saving_ratio"].(float64)
			grew := e.repoBytes() - before
			if !tc.wantRatio(ratio) {
				t.Errorf("project B's space_saving_ratio %v with dedup %s", ratio, tc.name)
			}
			if stored := grew > 12*mib; stored == tc.shared {
				t.Errorf("the repository grew by %d bytes for project B's copy of project A's disk (dedup %s)", grew, tc.name)
			}
		})
	}
}
