package compat

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	golangsdk "github.com/opentelekomcloud/gophertelekomcloud"
	"github.com/opentelekomcloud/gophertelekomcloud/openstack"
	"github.com/opentelekomcloud/gophertelekomcloud/openstack/csbs/v1/backup"
	"github.com/opentelekomcloud/gophertelekomcloud/openstack/csbs/v1/policies"
	"github.com/opentelekomcloud/gophertelekomcloud/openstack/csbs/v1/resource"
)

// TestTerraformProviderConfigure replays the Terraform provider's configure
// step (common/cfg: Config.LoadAndValidate → genClients): one password
// token scoped to the project and one scoped to the user's domain, each
// through openstack.NewClient and openstack.Authenticate. The domain token
// carries no project, and the project API refuses it.
func TestTerraformProviderConfigure(t *testing.T) {
	c := start(t, 1)
	for _, tc := range []struct {
		name string
		ao   golangsdk.AuthOptions
	}{
		{"project by name", golangsdk.AuthOptions{DomainName: "Default", TenantName: projectName}},
		{"project by id", golangsdk.AuthOptions{DomainName: "Default", TenantID: projectID}},
		{"domain by name", golangsdk.AuthOptions{DomainName: "Default"}},
		{"domain by id", golangsdk.AuthOptions{DomainID: "default"}},
	} {
		ao := tc.ao
		ao.IdentityEndpoint, ao.Username, ao.Password = c.base+"/v3", user, password
		pc, err := openstack.NewClient(ao.IdentityEndpoint)
		if err != nil {
			t.Fatal(err)
		}
		if err := openstack.Authenticate(pc, ao); err != nil {
			t.Fatalf("%s: authenticate: %v", tc.name, err)
		}
		domain := ao.TenantName == "" && ao.TenantID == ""
		if pc.TokenID == "" || pc.UserID == "" || pc.DomainID != "default" || (pc.ProjectID == "") != domain {
			t.Errorf("%s: token %t, user %q, domain %q, project %q", tc.name, pc.TokenID != "", pc.UserID, pc.DomainID, pc.ProjectID)
		}
		if !domain {
			if _, err := openstack.NewCSBSService(pc, golangsdk.EndpointOpts{Region: region}); err != nil {
				t.Errorf("%s: data-protect endpoint: %v", tc.name, err)
			}
			continue
		}
		// The domain token reaches no project: 403 on the project API.
		req, _ := http.NewRequest("GET", c.base+"/v1/"+projectID+"/checkpoint_items", nil)
		req.Header.Set("X-Auth-Token", pc.TokenID)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: the project API answered a domain token with %d, want 403", tc.name, resp.StatusCode)
		}
	}
}

// queued reads extend_info.queued of a backup (a csbs extension the SDK
// does not decode): true while its job waits for a free worker.
func queued(t *testing.T, pc *golangsdk.ProviderClient, sc *golangsdk.ServiceClient, id string) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", sc.ServiceURL("checkpoint_items", id), nil)
	req.Header.Set("X-Auth-Token", pc.TokenID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Item struct {
			ExtendInfo struct {
				Queued bool `json:"queued"`
			} `json:"extend_info"`
		} `json:"checkpoint_item"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return body.Item.ExtendInfo.Queued
}

// TestTerraformWaitLoops replays the Terraform provider's create, read and
// delete flows for backups and policies (services/csbs/resource_*), with
// their pending and target states exactly, while the only job worker is
// busy: a restore of another server whose stop command waits until the test
// releases it. Queued jobs must look like the cloud's states to those
// loops: a new backup "protecting", a backup being deleted "deleting", and
// a repeated DELETE answered with 400 (which the provider reads as "still
// deleting").
func TestTerraformWaitLoops(t *testing.T) {
	release := filepath.Join(t.TempDir(), "release")
	blocker := newServer(t, "7d3e9a10-4c2b-4f5e-8a6d-1b2c3d4e5f60", "blocker", "192.168.0.30", 8*mib)
	blocker.stop = []string{"sh", "-c", "while [ ! -e '" + release + "' ]; do sleep 0.05; done"}
	web := newServer(t, "9506416d-db6c-406e-8bca-c0f43793d914", "web-1", "192.168.0.10", 8*mib)
	c := start(t, 1, blocker, web)
	pc, sc := c.client()

	// Backups to restore and to delete, made while the worker is free.
	bcp, err := backup.Create(sc, blocker.id, backup.CreateOpts{BackupName: "blocker"})
	if err != nil {
		t.Fatal(err)
	}
	bItems, _ := backup.List(sc, backup.ListOpts{CheckpointId: bcp.Id})
	old, err := backup.Create(sc, web.id, backup.CreateOpts{BackupName: "old"})
	if err != nil {
		t.Fatal(err)
	}
	oldItems, _ := backup.List(sc, backup.ListOpts{CheckpointId: old.Id})
	if len(bItems) != 1 || len(oldItems) != 1 {
		t.Fatalf("backups of the set-up: %v %v", bItems, oldItems)
	}
	blockerBackup := waitAvailable(t, sc, bItems[0].Id)
	oldID := waitAvailable(t, sc, oldItems[0].Id).Id

	// Occupy the only worker: the restore's stop command waits for release.
	vb := blockerBackup.ExtendInfo.VolumeBackups[0]
	if _, err := resource.CreateRestorationTask(sc, resource.RestoreOpts{ProviderId: backup.ProviderID, CheckpointId: bcp.Id,
		Parameters: resource.RestoreParam{CheckpointItemId: blockerBackup.Id, Targets: resource.RestoreTarget{ServerId: blocker.id,
			Volumes: []resource.RestoreVolumeMapping{{BackupId: vb.Id, VolumeId: vb.SourceVolumeId}}}}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, "blocker restore starts", []string{"waiting_restore"}, []string{"restoring"}, time.Minute, func() (string, error) {
		b, err := backup.Get(sc, blockerBackup.Id)
		if err != nil {
			return "", err
		}
		return b.Status, nil
	})

	// resourceCSBSBackupV1Create: check_protectable, protect, list by
	// checkpoint_id, take the first, wait pending [protecting] target
	// [available]. The worker is busy, so the backup waits in the queue.
	type result struct {
		seen []string
		err  error
	}
	created := make(chan result, 1)
	var newID string
	{
		caps, err := resource.GetResBackupCapabilities(sc, []resource.ResourceBackupCapOpts{{ResourceId: web.id, ResourceType: serverType}})
		if err != nil || !caps[0].Result {
			t.Fatalf("check_protectable: %+v, %v", caps, err)
		}
		cp, err := backup.Create(sc, web.id, backup.CreateOpts{BackupName: "tf", ResourceType: serverType})
		if err != nil {
			t.Fatal(err)
		}
		items, err := backup.List(sc, backup.ListOpts{CheckpointId: cp.Id})
		if err != nil || len(items) == 0 {
			t.Fatalf("not able to find created Backup: %v", err)
		}
		newID = items[0].Id
	}
	if !queued(t, pc, sc, newID) {
		t.Fatalf("the new backup is not queued although the only worker is busy: the test would prove nothing")
	}

	// resourceCSBSBackupV1Delete of the old backup, one refresh at a time:
	// GET, and while it exists DELETE again; 404 → deleted, 400/409 →
	// deleting, 200 → the GET's status. Pending [available deleting],
	// target [deleted].
	deleteRefresh := func() (string, error) {
		r, err := backup.Get(sc, oldID)
		if err != nil {
			if _, ok := err.(golangsdk.ErrDefault404); ok {
				return "deleted", nil
			}
			return "deleting", err
		}
		err = backup.Delete(sc, old.Id)
		if err != nil {
			if _, ok := err.(golangsdk.ErrDefault404); ok {
				return "deleted", nil
			}
			if e, ok := err.(golangsdk.ErrUnexpectedResponseCode); ok && e.Actual == 409 {
				return "deleting", nil
			}
			if _, ok := err.(golangsdk.ErrDefault400); ok {
				return "deleting", nil
			}
			return "deleting", err
		}
		return r.Status, nil
	}
	// Two refreshes while the worker is still busy: the first DELETE is
	// accepted (state "available" from the GET before it), the second sees
	// the queued delete as "deleting" and is refused with 400.
	for i, want := range []string{"available", "deleting"} {
		st, err := deleteRefresh()
		if err != nil || st != want {
			t.Fatalf("delete refresh %d while queued: %q, %v; want %q", i+1, st, err, want)
		}
	}
	if !queued(t, pc, sc, oldID) {
		t.Fatalf("the delete is not queued although the only worker is busy")
	}
	if b, err := backup.Get(sc, newID); err != nil || b.Status != "protecting" || b.ExtendInfo.Progress != 0 {
		t.Fatalf("a queued backup shows %+v, %v; want protecting with progress 0", b, err)
	}

	// Release the worker; the provider's create wait and delete wait both
	// end at their targets without an unexpected state.
	go func() {
		seen, err := stateChange("terraform create wait", []string{"protecting"}, []string{"available"}, 2*time.Minute, func() (string, error) {
			n, err := backup.Get(sc, newID)
			if err != nil {
				return "", err
			}
			return n.Status, nil
		})
		created <- result{seen, err}
	}()
	time.Sleep(200 * time.Millisecond) // a few refreshes see the queued state
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitState(t, "terraform delete wait", []string{"available", "deleting"}, []string{"deleted"}, 2*time.Minute, deleteRefresh)
	select {
	case r := <-created:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.seen) < 2 || r.seen[0] != "protecting" {
			t.Errorf("the create wait saw %v; want protecting (queued) before available", r.seen)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("the create wait did not end")
	}
	// resourceCSBSBackupV1Read.
	if b, err := backup.Get(sc, newID); err != nil || b.Status != "available" || b.CheckpointId == "" || len(b.ExtendInfo.VolumeBackups) != 1 {
		t.Errorf("read: %+v, %v", b, err)
	}

	// resourceCSBSBackupPolicyCreate: create, wait pending [creating]
	// target [suspended]; read; delete, wait pending [available] target
	// [deleted] (a 404 from GET).
	maxBackups := 3
	pol, err := policies.Create(sc, policies.CreateOpts{
		Name: "tf-policy", ProviderId: backup.ProviderID, Parameters: policies.PolicyParam{Common: map[string]string{}},
		Resources: []policies.Resource{{Id: web.id, Type: serverType, Name: web.name}},
		ScheduledOperations: []policies.ScheduledOperation{{Name: "daily", Enabled: true, OperationType: "backup",
			OperationDefinition: policies.OperationDefinition{MaxBackups: &maxBackups},
			Trigger: policies.Trigger{Properties: policies.TriggerProperties{
				Pattern: "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=MO;BYHOUR=12;BYMINUTE=00\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"}}}},
	})
	if err != nil {
		t.Fatalf("create policy: %v", err)
	}
	waitState(t, "terraform policy create wait", []string{"creating"}, []string{"suspended"}, time.Minute, func() (string, error) {
		p, err := policies.Get(sc, pol.ID)
		if err != nil {
			return "", err
		}
		return p.Status, nil
	})
	if err := policies.Delete(sc, pol.ID); err != nil {
		t.Fatalf("error delete CSBSv1 policy; %v", err)
	}
	waitState(t, "terraform policy delete wait", []string{"available"}, []string{"deleted"}, time.Minute, func() (string, error) {
		p, err := policies.Get(sc, pol.ID)
		if err != nil {
			if _, ok := err.(golangsdk.ErrDefault404); ok {
				return "deleted", nil
			}
			return "available", err
		}
		return p.Status, nil
	})
}
