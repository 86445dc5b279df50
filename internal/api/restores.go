package api

import (
	"encoding/json"
	"net/http"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// wireMapping is a restore_volume_mapping as requests carry it.
type wireMapping struct {
	BackupID *string `json:"backup_id"`
	VolumeID *string `json:"volume_id"`
}

func mappingFromWire(field string, in *[]wireMapping) ([]store.VolumeMapping, error) {
	if in == nil {
		return nil, nil
	}
	out := make([]store.VolumeMapping, 0, len(*in))
	for i, m := range *in {
		if m.BackupID == nil || *m.BackupID == "" {
			return nil, service.InvalidParam(field, "entry %d has no backup_id", i+1)
		}
		if m.VolumeID == nil || *m.VolumeID == "" {
			return nil, service.InvalidParam(field, "entry %d has no volume_id", i+1)
		}
		out = append(out, store.VolumeMapping{BackupID: *m.BackupID, VolumeID: *m.VolumeID})
	}
	return out, nil
}

// restoreBody is the body of "Creating a Restoration Task".
type restoreBody struct {
	Restore *struct {
		CheckpointID  *string `json:"checkpoint_id"`
		ProviderID    *string `json:"provider_id"`
		RestoreTarget *string `json:"restore_target"`
		Parameters    *struct {
			CheckpointItemID *string `json:"checkpoint_item_id"`
			PowerOn          *bool   `json:"power_on"`
			Targets          *struct {
				ServerID *string        `json:"server_id"`
				Volumes  *[]wireMapping `json:"volumes"`
			} `json:"targets"`
		} `json:"parameters"`
	} `json:"restore"`
}

// request turns a restore body into a service request. power_on defaults to
// true (the console's default) and targets.volumes may be omitted when csbs
// can map the disks itself; everything else the reference marks mandatory
// is required.
func (b restoreBody) request() (service.RestoreRequest, error) {
	var req service.RestoreRequest
	r := b.Restore
	if r == nil {
		return req, service.InvalidParam("restore", "missing; the body must be {\"restore\": {...}}")
	}
	if r.ProviderID == nil || *r.ProviderID == "" {
		return req, service.InvalidParam("provider_id", "missing; it is %s", service.ProviderID)
	}
	if err := checkProvider(*r.ProviderID); err != nil {
		return req, err
	}
	if r.CheckpointID == nil || *r.CheckpointID == "" {
		return req, service.InvalidParam("checkpoint_id", "missing")
	}
	req.CheckpointID = *r.CheckpointID
	if r.RestoreTarget != nil {
		req.Target = *r.RestoreTarget
	}
	p := r.Parameters
	if p == nil {
		return req, service.InvalidParam("parameters", "missing")
	}
	if p.CheckpointItemID == nil || *p.CheckpointItemID == "" {
		return req, service.InvalidParam("checkpoint_item_id", "missing")
	}
	req.ItemID = *p.CheckpointItemID
	req.PowerOn = p.PowerOn == nil || *p.PowerOn
	if p.Targets == nil {
		return req, service.InvalidParam("targets", "missing")
	}
	if p.Targets.ServerID == nil || *p.Targets.ServerID == "" {
		return req, service.InvalidParam("server_id", "missing")
	}
	req.ServerID = *p.Targets.ServerID
	vols, err := mappingFromWire("volumes", p.Targets.Volumes)
	if err != nil {
		return req, err
	}
	req.Volumes = vols
	return req, nil
}

type wireRestore struct {
	ID              string            `json:"id"`
	CheckpointID    string            `json:"checkpoint_id"`
	Parameters      wireRestoreParams `json:"parameters"`
	ProjectID       string            `json:"project_id"`
	ProviderID      string            `json:"provider_id"`
	ResourcesReason map[string]string `json:"resources_reason"`
	ResourcesStatus map[string]string `json:"resources_status"`
	RestoreTarget   string            `json:"restore_target"`
	Status          string            `json:"status"`
	// Extensions of csbs (as OpenStack Karbor had them).
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
}

type wireRestoreParams struct {
	CheckpointItemID string            `json:"checkpoint_item_id"`
	PowerOn          bool              `json:"power_on"`
	Targets          wireRestoreTarget `json:"targets"`
}

type wireRestoreTarget struct {
	ServerID string                `json:"server_id"`
	Volumes  []store.VolumeMapping `json:"volumes"`
}

func restoreToWire(r *store.Restore) wireRestore {
	vols := r.Volumes
	if vols == nil {
		vols = []store.VolumeMapping{}
	}
	nonNil := func(m map[string]string) map[string]string {
		if m == nil {
			return map[string]string{}
		}
		return m
	}
	return wireRestore{
		ID: r.ID, CheckpointID: r.CheckpointID, ProjectID: r.ProjectID, ProviderID: service.ProviderID,
		Parameters: wireRestoreParams{
			CheckpointItemID: r.ItemID, PowerOn: r.PowerOn,
			Targets: wireRestoreTarget{ServerID: r.ServerID, Volumes: vols},
		},
		ResourcesReason: nonNil(r.ResourcesReason), ResourcesStatus: nonNil(r.ResourcesStatus),
		RestoreTarget: r.Target, Status: r.Status,
		CreatedAt: formatTime(r.CreatedAt), UpdatedAt: formatTime(r.UpdatedAt),
	}
}

// createRestore serves POST /v1/{project_id}/restores.
func (s *Server) createRestore(w http.ResponseWriter, r *http.Request) error {
	var body restoreBody
	if err := decode(r, &body); err != nil {
		return err
	}
	req, err := body.request()
	if err != nil {
		return err
	}
	res, err := s.svc.Restore(r.Context(), r.PathValue("project_id"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"restore": restoreToWire(res)})
}

// getRestore serves GET /v1/{project_id}/restores/{restore_id}.
func (s *Server) getRestore(w http.ResponseWriter, r *http.Request) error {
	res, err := s.svc.GetRestore(r.Context(), r.PathValue("project_id"), r.PathValue("restore_id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"restore": restoreToWire(res)})
}

var restoreStatuses = map[string]bool{store.RestoreInProgress: true, store.RestoreSuccess: true, store.RestoreFail: true}

// listRestores serves GET /v1/{project_id}/restores?status=&limit=&marker=&offset=.
func (s *Server) listRestores(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.RestoreFilter{Status: q.Get("status")}
	if f.Status != "" && !restoreStatuses[f.Status] {
		return service.InvalidParam("status", "%q is not a restore status; use in_progress, success or fail", truncate(f.Status, 40))
	}
	pg, err := parsePaging(q)
	if err != nil {
		return err
	}
	f.Limit, f.Offset, f.Marker = pg.limit+1, pg.offset, pg.marker // one more: is there a next page?
	rs, err := s.svc.Restores(r.Context(), r.PathValue("project_id"), f)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listPage(r, s.baseURL(r), "restores", rs, pg.limit, func(x *store.Restore) string { return x.ID }, restoreToWire))
}

// restorableParam is one entry of check_restorable.
type restorableParam struct {
	CheckpointItemID *string `json:"checkpoint_item_id"`
	Target           *struct {
		ResourceID   *string        `json:"resource_id"`
		ResourceType *string        `json:"resource_type"`
		Volumes      *[]wireMapping `json:"volumes"`
	} `json:"target"`
}

// checkRestorable answers check_restorable of POST …/resources/action.
func (s *Server) checkRestorable(w http.ResponseWriter, r *http.Request, raw json.RawMessage) error {
	var params []restorableParam
	if err := decodeBytes(raw, &params); err != nil {
		if e, ok := service.AsError(err); ok && e.Code == service.CodeInvalidParam {
			return service.InvalidParam("check_restorable", "want a list of {checkpoint_item_id, target}: %s", e.Msg)
		}
		return err
	}
	checks := make([]service.RestorableCheck, 0, len(params))
	for i, p := range params {
		if p.CheckpointItemID == nil || *p.CheckpointItemID == "" {
			return service.InvalidParam("check_restorable.checkpoint_item_id", "missing in entry %d", i+1)
		}
		t := p.Target
		if t == nil {
			return service.InvalidParam("check_restorable.target", "missing in entry %d", i+1)
		}
		if t.ResourceID == nil || *t.ResourceID == "" {
			return service.InvalidParam("check_restorable.target.resource_id", "missing in entry %d", i+1)
		}
		if t.ResourceType == nil || *t.ResourceType == "" {
			return service.InvalidParam("check_restorable.target.resource_type", "missing in entry %d", i+1)
		}
		vols, err := mappingFromWire("check_restorable.target.volumes", t.Volumes)
		if err != nil {
			return err
		}
		checks = append(checks, service.RestorableCheck{
			ItemID: *p.CheckpointItemID, ResourceID: *t.ResourceID, ResourceType: *t.ResourceType, Volumes: vols,
		})
	}
	res, err := s.svc.CheckRestorable(r.Context(), r.PathValue("project_id"), checks)
	if err != nil {
		return err
	}
	out := make([]map[string]any, len(res))
	for i, c := range res {
		out[i] = map[string]any{"resource_id": c.ResourceID, "resource_type": c.ResourceType, "result": c.Result,
			"error_code": c.ErrorCode, "error_msg": c.ErrorMsg}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"restorable": out})
}
