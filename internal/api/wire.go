package api

import (
	"encoding/json"
	"time"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// The response shapes of the reference. Go clients decode by type, so
// every number is a JSON number and fail_code is always an object.

type wireCheckpoint struct {
	Status         string          `json:"status"`
	CreatedAt      string          `json:"created_at"`
	ID             string          `json:"id"`
	ResourceGraph  *string         `json:"resource_graph"`
	ProjectID      string          `json:"project_id"`
	ProtectionPlan wirePlan        `json:"protection_plan"`
	ExtraInfo      json.RawMessage `json:"extra_info"`
}

type wirePlan struct {
	ID        string           `json:"id"`
	Name      string           `json:"name"`
	Resources []store.Resource `json:"resources"`
}

func checkpointToWire(cp *service.CheckpointView) wireCheckpoint {
	extra := cp.ExtraInfo
	if len(extra) == 0 {
		extra = json.RawMessage("null")
	}
	res := make([]store.Resource, len(cp.Resources))
	copy(res, cp.Resources)
	for i := range res {
		if len(res[i].ExtraInfo) == 0 {
			res[i].ExtraInfo = json.RawMessage("{}")
		}
	}
	return wireCheckpoint{
		Status: cp.Status, CreatedAt: formatTime(cp.CreatedAt), ID: cp.ID, ProjectID: cp.ProjectID,
		ProtectionPlan: wirePlan{ID: cp.PlanID, Name: cp.PlanName, Resources: res}, ExtraInfo: extra,
	}
}

type wireItem struct {
	CheckpointID string         `json:"checkpoint_id"`
	CreatedAt    string         `json:"created_at"`
	ExtendInfo   wireExtendInfo `json:"extend_info"`
	ID           string         `json:"id"`
	Name         string         `json:"name"`
	ResourceID   string         `json:"resource_id"`
	Status       string         `json:"status"`
	UpdatedAt    string         `json:"updated_at"`
	BackupData   wireBackupData `json:"backup_data"`
	Description  string         `json:"description"`
	Tags         []store.Tag    `json:"tags"`
	ResourceType string         `json:"resource_type"`
}

type wireExtendInfo struct {
	AutoTrigger          bool               `json:"auto_trigger"`
	AverageSpeed         int64              `json:"average_speed"`
	CopyFrom             string             `json:"copy_from"`
	CopyStatus           string             `json:"copy_status"`
	FailCode             wireFailCode       `json:"fail_code"`
	FailOp               string             `json:"fail_op"`
	FailReason           string             `json:"fail_reason"`
	ImageType            string             `json:"image_type"`
	Incremental          bool               `json:"incremental"`
	Progress             int                `json:"progress"`
	ResourceAZ           string             `json:"resource_az"`
	ResourceName         string             `json:"resource_name"`
	ResourceType         string             `json:"resource_type"`
	Size                 int64              `json:"size"`
	SpaceSavingRatio     int                `json:"space_saving_ratio"`
	VolumeBackups        []wireVolumeBackup `json:"volume_backups"`
	FinishedAt           string             `json:"finished_at"`
	SupportedRestoreMode string             `json:"supported_restore_mode"`
	OSImagesData         []struct{}         `json:"os_images_data"`
	SupportLLD           bool               `json:"support_lld"`
	TaskID               string             `json:"taskid"`
	HypervisorType       string             `json:"hypervisor_type"`

	// Extensions of csbs: how consistent the backup is, and who made it.
	CrashConsistent bool   `json:"crash_consistent"`
	Quiesced        bool   `json:"quiesced"` // the guest's file systems were frozen (guest agent)
	SnapshotMethod  string `json:"snapshot_method"`
	CreatedBy       string `json:"created_by"`
	// ReadBytes is how much of the disks the backup has read so far: with
	// progress it gives clients (the CLI's progress bar) the speed.
	ReadBytes int64 `json:"read_bytes"`
	// Queued is true while the backup's job (a backup or a delete) waits
	// for a free worker; status shows the state it waits to run in.
	Queued bool `json:"queued"`
	// WaitingForNode is there only while the backup's job waits for the
	// node that has the server and is down (scale-out): the status stays
	// what it was (protecting, restoring, …).
	WaitingForNode *wireNodeWait `json:"waiting_for_node,omitempty"`
	// VerifiedAt is when the repository last read and authenticated all
	// the backup's data ("" never); Damaged says whether it found any of
	// it damaged, DamageReason and DamagedVolumes what cannot be restored.
	VerifiedAt     string              `json:"verified_at"`
	Damaged        bool                `json:"damaged"`
	DamageReason   string              `json:"damage_reason,omitempty"`
	DamagedVolumes []wireDamagedVolume `json:"damaged_volumes,omitempty"`
}

type wireNodeWait struct {
	Node     string `json:"node"`
	LastSeen string `json:"last_seen"` // "" when the node was never seen
	Reason   string `json:"reason"`
}

func nodeWaitToWire(w *store.NodeWait) *wireNodeWait {
	if w == nil {
		return nil
	}
	out := &wireNodeWait{Node: w.Node, Reason: "node " + w.Node + " has this server's disks and has never been seen up; the job starts when it is"}
	if !w.LastSeen.IsZero() {
		out.LastSeen = formatTime(w.LastSeen)
		out.Reason = "node " + w.Node + " has this server's disks and is down (last seen " + out.LastSeen + "); the job resumes when it is back"
	}
	return out
}

type wireFailCode struct {
	Code        string `json:"Code,omitempty"`
	Description string `json:"Description,omitempty"`
}

type wireBackupData struct {
	Region           string `json:"__openstack_region_name"`
	CloudServiceType string `json:"cloudservicetype"`
	Disk             int64  `json:"disk"`
	ImageType        string `json:"imagetype"`
	RAM              int    `json:"ram"`
	VCPUs            int    `json:"vcpus"`
	EIP              string `json:"eip"`
	PrivateIP        string `json:"private_ip"`
}

type wireVolumeBackup struct {
	AverageSpeed     int64  `json:"average_speed"`
	Bootable         bool   `json:"bootable"`
	ID               string `json:"id"`
	ImageType        string `json:"image_type"`
	Incremental      bool   `json:"incremental"`
	Name             string `json:"name"`
	Size             int64  `json:"size"`
	SourceVolumeID   string `json:"source_volume_id"`
	SourceVolumeSize int64  `json:"source_volume_size"`
	SpaceSavingRatio int    `json:"space_saving_ratio"`
	Status           string `json:"status"`
	SourceVolumeName string `json:"source_volume_name"`
	SnapshotID       string `json:"snapshot_id"`
	// Extensions of csbs: how much of the disk was read, and why (changed
	// extents only, or everything allocated and the reason).
	ReadBytes  int64  `json:"read_bytes"`
	ReadReason string `json:"read_reason,omitempty"`
}

// megabytes rounds a byte count up to whole MB, the unit sizes are shown in,
// so that any change shows.
func megabytes(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

func itemToWire(it *store.Item) wireItem {
	in := it.Info
	tags := it.Tags
	if tags == nil {
		tags = []store.Tag{}
	}
	vbs := make([]wireVolumeBackup, len(in.Volumes))
	for i, v := range in.Volumes {
		vbs[i] = wireVolumeBackup{
			AverageSpeed: v.AverageSpeedMBps, Bootable: v.Bootable, ID: v.ID, ImageType: "backup",
			Incremental: v.Incremental, Name: v.Name, Size: megabytes(v.SizeBytes),
			SourceVolumeID: v.SourceVolumeID, SourceVolumeSize: v.SourceVolumeSize,
			SpaceSavingRatio: v.SpaceSavingRatio, Status: service.ClientStatus(v.Status), SourceVolumeName: v.SourceVolumeName,
			SnapshotID: v.SnapshotID, ReadBytes: v.ReadBytes, ReadReason: v.ReadReason,
		}
	}
	var fc wireFailCode
	if in.FailReason != "" {
		fc = wireFailCode{Code: in.FailCode, Description: in.FailReason}
	}
	finished := ""
	if in.FinishedAt != nil {
		finished = formatTime(*in.FinishedAt)
	}
	var verifiedAt string
	var dmg []wireDamagedVolume
	if v := in.Verified; v != nil {
		verifiedAt = formatTime(v.VerifiedAt)
		if len(v.Damage) > 0 {
			dmg = damagedToWire(v.Damage)
		}
	}
	wi := wireItem{
		CheckpointID: it.CheckpointID, CreatedAt: formatTime(it.CreatedAt), ID: it.ID, Name: it.Name,
		ResourceID: it.ResourceID, Status: service.ClientStatus(it.Status), UpdatedAt: formatTime(it.UpdatedAt),
		Description: it.Description, Tags: tags, ResourceType: it.ResourceType,
		BackupData: wireBackupData{
			Region: in.BackupData.Region, CloudServiceType: "server", Disk: in.BackupData.Disk,
			RAM: in.BackupData.RAM, VCPUs: in.BackupData.VCPUs, EIP: in.BackupData.EIP, PrivateIP: in.BackupData.PrivateIP,
		},
		ExtendInfo: wireExtendInfo{
			AutoTrigger: in.AutoTrigger, AverageSpeed: in.AverageSpeedKBps, CopyStatus: "na", FailCode: fc,
			FailOp: in.FailOp, FailReason: in.FailReason, ImageType: "backup", Incremental: in.Incremental,
			Progress: in.Progress, ResourceAZ: it.ResourceAZ, ResourceName: it.ResourceName,
			ResourceType: it.ResourceType, Size: megabytes(in.SizeBytes), SpaceSavingRatio: in.SpaceSavingRatio,
			VolumeBackups: vbs, FinishedAt: finished, SupportedRestoreMode: "backup", OSImagesData: []struct{}{},
			TaskID: in.TaskID, HypervisorType: "QEMU", CrashConsistent: in.CrashConsistent, Quiesced: in.Quiesced,
			SnapshotMethod: in.SnapshotMethod, CreatedBy: in.CreatedBy, ReadBytes: in.ReadBytes,
			Queued: service.Queued(it.Status), WaitingForNode: nodeWaitToWire(in.WaitingFor),
			VerifiedAt: verifiedAt, DamagedVolumes: dmg,
		},
	}
	if v := in.Verified; v != nil && v.Damaged {
		wi.ExtendInfo.Damaged, wi.ExtendInfo.DamageReason = true, v.Reason
	}
	return wi
}

func formatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }
