package compat

import (
	"os"
	"testing"
	"time"

	golangsdk "github.com/opentelekomcloud/gophertelekomcloud"
	"github.com/opentelekomcloud/gophertelekomcloud/openstack/common/tags"
	"github.com/opentelekomcloud/gophertelekomcloud/openstack/csbs/v1/backup"
	"github.com/opentelekomcloud/gophertelekomcloud/openstack/csbs/v1/policies"
	"github.com/opentelekomcloud/gophertelekomcloud/openstack/csbs/v1/resource"
)

const serverType = "OS::Nova::Server"

// waitAvailable polls a backup through the SDK until it is available.
func waitAvailable(t *testing.T, sc *golangsdk.ServiceClient, id string) *backup.Backup {
	t.Helper()
	var b *backup.Backup
	waitState(t, "backup "+id, []string{"protecting", "restoring", "waiting_restore"}, []string{"available"}, 2*time.Minute, func() (string, error) {
		var err error
		b, err = backup.Get(sc, id)
		if err != nil {
			return "", err
		}
		return b.Status, nil
	})
	return b
}

// TestSDKLifecycle runs the whole CSBS lifecycle through the cloud's Go SDK
// only: authenticate, find the endpoint in the catalog, check_protectable,
// protect, list (by checkpoint id, by ip, paged), get (by backup and by
// checkpoint id), count, policies create/get/list/update/delete, execute a
// policy with resources empty and set, check_restorable, restore, delete a
// backup and see 404.
func TestSDKLifecycle(t *testing.T) {
	web := newServer(t, "9506416d-db6c-406e-8bca-c0f43793d914", "web-1", "192.168.0.10", 16*mib)
	db := newServer(t, "5a1c3d7e-2b4f-4e8a-9c6d-0f1e2d3c4b5a", "db-1", "192.168.0.20", 16*mib)
	c := start(t, 2, web, db)
	_, sc := c.client()

	// check_protectable.
	caps, err := resource.GetResBackupCapabilities(sc, []resource.ResourceBackupCapOpts{
		{ResourceId: web.id, ResourceType: serverType}, {ResourceId: "00000000-0000-0000-0000-000000000000", ResourceType: serverType}})
	if err != nil || len(caps) != 2 || !caps[0].Result || caps[1].Result || caps[1].ErrorCode == "" {
		t.Fatalf("check_protectable: %+v, %v", caps, err)
	}

	// Protect, then find the backup by checkpoint id as Terraform does.
	webHash := fileHash(t, web.disk)
	cp, err := backup.Create(sc, web.id, backup.CreateOpts{BackupName: "sdk-backup", Description: "through the SDK",
		ResourceType: serverType, Tags: []tags.ResourceTag{{Key: "env", Value: "test"}}})
	if err != nil || cp.Id == "" || cp.Status == "" {
		t.Fatalf("protect: %+v, %v", cp, err)
	}
	items, err := backup.List(sc, backup.ListOpts{CheckpointId: cp.Id})
	if err != nil || len(items) != 1 {
		t.Fatalf("list by checkpoint_id: %d backups, %v", len(items), err)
	}
	id := items[0].Id
	b := waitAvailable(t, sc, id)
	if b.Name != "sdk-backup" || b.CheckpointId != cp.Id || b.ResourceId != web.id || len(b.ExtendInfo.VolumeBackups) != 1 ||
		b.VMMetadata.PrivateIp != web.ip || b.VMMetadata.Vcpus != 2 || len(b.Tags) != 1 || b.ExtendInfo.Progress != 100 {
		t.Errorf("backup as the SDK decodes it: %+v", b)
	}
	// Get by the checkpoint id resolves to the checkpoint's one backup.
	if byCP, err := backup.Get(sc, cp.Id); err != nil || byCP.Id != id {
		t.Errorf("get by checkpoint id: %+v, %v", byCP, err)
	}
	// A backup of the other server, then list by ip and count.
	cp2, err := backup.Create(sc, db.id, backup.CreateOpts{BackupName: "db-backup"})
	if err != nil {
		t.Fatal(err)
	}
	dbItems, err := backup.List(sc, backup.ListOpts{CheckpointId: cp2.Id})
	if err != nil || len(dbItems) != 1 {
		t.Fatalf("list db backup: %v, %v", dbItems, err)
	}
	waitAvailable(t, sc, dbItems[0].Id)
	if byIP, err := backup.List(sc, backup.ListOpts{VmIp: db.ip}); err != nil || len(byIP) != 1 || byIP[0].ResourceId != db.id {
		t.Errorf("list by ip %s: %d backups, %v; want the db server's one", db.ip, len(byIP), err)
	}
	if n, err := backup.CountBackups(sc, backup.CountOpts{ResourceId: web.id}); err != nil || *n != 1 {
		t.Errorf("count: %v, %v", n, err)
	}

	// Policies: create, get, list, update.
	maxBackups := 5
	pol, err := policies.Create(sc, policies.CreateOpts{
		Name: "sdk-policy", Description: "nightly", ProviderId: backup.ProviderID,
		Parameters: policies.PolicyParam{Common: map[string]any{}},
		Resources:  []policies.Resource{{Id: web.id, Type: serverType, Name: web.name}, {Id: db.id, Type: serverType, Name: db.name}},
		ScheduledOperations: []policies.ScheduledOperation{{
			Name: "nightly", Enabled: true, OperationType: "backup",
			OperationDefinition: policies.OperationDefinition{MaxBackups: &maxBackups, Permanent: false},
			Trigger:             policies.Trigger{Properties: policies.TriggerProperties{Pattern: "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=14;BYMINUTE=00\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"}},
		}},
	})
	if err != nil || pol.ID == "" || pol.Status != "suspended" || len(pol.ScheduledOperations) != 1 || pol.CreatedAt.IsZero() {
		t.Fatalf("create policy: %+v, %v", pol, err)
	}
	got, err := policies.Get(sc, pol.ID)
	if err != nil || got.Name != "sdk-policy" || len(got.Resources) != 2 || *got.ScheduledOperations[0].OperationDefinition.MaxBackups != 5 {
		t.Errorf("get policy: %+v, %v", got, err)
	}
	if all, err := policies.List(sc, policies.ListOpts{Limit: 1}); err != nil || len(all) != 1 || all[0].ID != pol.ID {
		t.Errorf("list policies: %+v, %v", all, err)
	}
	upd, err := policies.Update(sc, pol.ID, policies.UpdateOpts{Name: "sdk-policy-2", ScheduledOperations: []policies.ScheduledOperationToUpdate{{
		Id: got.ScheduledOperations[0].ID, Enabled: false, Name: "nightly",
		OperationDefinition: policies.OperationDefinition{MaxBackups: &maxBackups},
		Trigger:             policies.Trigger{Properties: policies.TriggerProperties{Pattern: got.ScheduledOperations[0].Trigger.Properties.Pattern}},
	}}})
	if err != nil || upd.Name != "sdk-policy-2" || upd.Status != "suspended" || upd.ScheduledOperations[0].Enabled {
		t.Errorf("update policy: %+v, %v", upd, err)
	}

	// Execute the policy: resources empty (the SDK sends []) means all its
	// servers; then a subset.
	exec := func(res []string, want int) {
		t.Helper()
		ecp, err := backup.ExecBackupPolicy(sc, backup.CheckpointOpts{PlanId: pol.ID, Parameters: backup.CheckpointParam{Resources: res}})
		if err != nil {
			t.Fatalf("execute policy with resources %v: %v", res, err)
		}
		its, err := backup.List(sc, backup.ListOpts{CheckpointId: ecp.Id})
		if err != nil || len(its) != want {
			t.Fatalf("execute policy with resources %v: %d backups, %v; want %d", res, len(its), err, want)
		}
		for _, it := range its {
			waitAvailable(t, sc, it.Id)
		}
	}
	exec([]string{}, 2)
	exec([]string{db.id}, 1)
	if n, err := backup.CountBackups(sc, backup.CountOpts{PolicyId: pol.ID}); err != nil || *n != 3 {
		t.Errorf("count by policy: %v, %v; want 3", n, err)
	}

	// Paging: the SDK follows checkpoint_items_links through every page.
	if all, err := backup.List(sc, backup.ListOpts{Limit: "2"}); err != nil || len(all) != 5 {
		t.Errorf("list with limit 2 through every page: %d backups, %v; want 5", len(all), err)
	}

	// check_restorable, then restore the first backup over a changed disk.
	vols := []resource.RestoreVolumeMapping{{BackupId: b.ExtendInfo.VolumeBackups[0].Id, VolumeId: b.ExtendInfo.VolumeBackups[0].SourceVolumeId}}
	rcaps, err := resource.GetResRestorationCapabilities(sc, []resource.GetRestorationOpts{{CheckpointItemId: id,
		Target: resource.RestorableTarget{ResourceId: web.id, ResourceType: serverType, Volumes: vols}}})
	if err != nil || len(rcaps) != 1 || !rcaps[0].Result {
		t.Fatalf("check_restorable: %+v, %v", rcaps, err)
	}
	f, err := os.OpenFile(web.disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("scribbled over after the backup"), 4096)
	f.Close()
	rs, err := resource.CreateRestorationTask(sc, resource.RestoreOpts{ProviderId: backup.ProviderID, CheckpointId: cp.Id,
		Parameters: resource.RestoreParam{CheckpointItemId: id, Targets: resource.RestoreTarget{ServerId: web.id, Volumes: vols}}})
	if err != nil || rs.Id == "" {
		t.Fatalf("restore: %+v, %v", rs, err)
	}
	waitAvailable(t, sc, id)
	deadline := time.Now().Add(time.Minute)
	for fileHash(t, web.disk) != webHash && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if fileHash(t, web.disk) != webHash {
		t.Errorf("the restored disk differs from the backed-up one")
	}

	// Delete the first backup; GET answers 404 (ErrDefault404) once it is gone.
	if err := backup.Delete(sc, cp.Id); err != nil {
		t.Fatalf("delete: %v", err)
	}
	waitState(t, "deleted backup", []string{"deleting"}, []string{"gone"}, time.Minute, func() (string, error) {
		b, err := backup.Get(sc, id)
		if _, ok := err.(golangsdk.ErrDefault404); ok {
			return "gone", nil
		}
		if err != nil {
			return "", err
		}
		return b.Status, nil
	})

	// Delete the policy: 200, then 404.
	if err := policies.Delete(sc, pol.ID); err != nil {
		t.Fatalf("delete policy through the SDK: %v", err)
	}
	if _, err := policies.Get(sc, pol.ID); err == nil {
		t.Errorf("get a deleted policy: no error")
	} else if _, ok := err.(golangsdk.ErrDefault404); !ok {
		t.Errorf("get a deleted policy: %v, want 404", err)
	}
}
