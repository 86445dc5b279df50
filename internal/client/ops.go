package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

// Backup is a checkpoint_item: the backup of one server. Raw is the
// object exactly as the API sent it.
type Backup struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Description  string `json:"description"`
	CheckpointID string `json:"checkpoint_id"`
	ResourceID   string `json:"resource_id"`
	Status       string `json:"status"`
	CreatedAt    string `json:"created_at"`
	ExtendInfo   struct {
		Progress     int    `json:"progress"`
		Size         int64  `json:"size"` // MB
		ReadBytes    int64  `json:"read_bytes"`
		Incremental  bool   `json:"incremental"`
		ResourceName string `json:"resource_name"`
		FailReason   string `json:"fail_reason"`
		AverageSpeed int64  `json:"average_speed"`
	} `json:"extend_info"`

	Raw json.RawMessage `json:"-"`
}

// Restore is a restoration task. Raw is the object as the API sent it.
type Restore struct {
	ID              string            `json:"id"`
	CheckpointID    string            `json:"checkpoint_id"`
	Status          string            `json:"status"`
	CreatedAt       string            `json:"created_at"`
	ResourcesReason map[string]string `json:"resources_reason"`
	Parameters      struct {
		CheckpointItemID string `json:"checkpoint_item_id"`
		Targets          struct {
			ServerID string `json:"server_id"`
		} `json:"targets"`
	} `json:"parameters"`

	Raw json.RawMessage `json:"-"`
}

// ProtectRequest is what a backup of one server takes.
type ProtectRequest struct {
	Name        string
	Description string
	// Incremental, when not nil, asks for an incremental (true) or full
	// (false) backup; nil lets the service choose (incremental when it can).
	Incremental *bool
}

// CreateBackup starts a backup of server and returns the backup it
// created (status waiting_protect or protecting).
func (c *Client) CreateBackup(ctx context.Context, serverID string, r ProtectRequest) (*Backup, error) {
	p := map[string]any{"backup_name": r.Name, "description": r.Description, "extra_info": map[string]any{}}
	if r.Incremental != nil {
		p["incremental"] = *r.Incremental
	}
	in := map[string]any{"protect": p}
	var out struct {
		Checkpoint struct {
			ID string `json:"id"`
		} `json:"checkpoint"`
	}
	path := "/providers/" + ProviderID + "/resources/" + url.PathEscape(serverID) + "/action"
	if err := c.Do(ctx, http.MethodPost, path, nil, in, &out); err != nil {
		return nil, err
	}
	// A checkpoint made by protect holds exactly one backup.
	bs, err := c.Backups(ctx, url.Values{"checkpoint_id": {out.Checkpoint.ID}})
	if err != nil {
		return nil, err
	}
	if len(bs) == 0 {
		return c.Backup(ctx, out.Checkpoint.ID) // resolves a checkpoint id
	}
	return bs[0], nil
}

// Backup returns one backup (a checkpoint id holding one backup also
// resolves to it).
func (c *Client) Backup(ctx context.Context, id string) (*Backup, error) {
	var out struct {
		Item json.RawMessage `json:"checkpoint_item"`
	}
	if err := c.Do(ctx, http.MethodGet, "/checkpoint_items/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, err
	}
	b := &Backup{Raw: out.Item}
	return b, json.Unmarshal(out.Item, b)
}

// Backups lists backups matching query (the filters of the reference:
// status, resource_id, checkpoint_id, limit, marker, sort …): one page.
func (c *Client) Backups(ctx context.Context, query url.Values) ([]*Backup, error) {
	var out struct {
		Items []json.RawMessage `json:"checkpoint_items"`
	}
	if err := c.Do(ctx, http.MethodGet, "/checkpoint_items", query, nil, &out); err != nil {
		return nil, err
	}
	bs := make([]*Backup, 0, len(out.Items))
	for _, raw := range out.Items {
		b := &Backup{Raw: raw}
		if err := json.Unmarshal(raw, b); err != nil {
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

// DeleteBackup deletes a backup: its checkpoint, or of it only the backup
// itemID when not empty. The service deletes in the background.
func (c *Client) DeleteBackup(ctx context.Context, checkpointID, itemID string) error {
	var q url.Values
	if itemID != "" {
		q = url.Values{"checkpoint_items": {itemID}}
	}
	return c.Do(ctx, http.MethodDelete, "/providers/"+ProviderID+"/checkpoints/"+url.PathEscape(checkpointID), q, nil, nil)
}

// RestoreRequest restores a backup onto a server (by default the server
// it was taken of, disk by disk).
type RestoreRequest struct {
	CheckpointID string
	BackupID     string
	ServerID     string
	PowerOn      bool
	// Volumes maps disk backups to target disks; nil lets the service map
	// them to the server's disks.
	Volumes []VolumeMapping
}

// VolumeMapping writes the disk backup BackupID onto the disk VolumeID.
type VolumeMapping struct {
	BackupID string `json:"backup_id"`
	VolumeID string `json:"volume_id"`
}

// CreateRestore starts a restore.
func (c *Client) CreateRestore(ctx context.Context, r RestoreRequest) (*Restore, error) {
	targets := map[string]any{"server_id": r.ServerID}
	if r.Volumes != nil {
		targets["volumes"] = r.Volumes
	}
	in := map[string]any{"restore": map[string]any{
		"checkpoint_id": r.CheckpointID, "provider_id": ProviderID, "restore_target": "",
		"parameters": map[string]any{"checkpoint_item_id": r.BackupID, "power_on": r.PowerOn, "targets": targets},
	}}
	return c.restore(ctx, http.MethodPost, "/restores", in)
}

// Restore returns one restore.
func (c *Client) Restore(ctx context.Context, id string) (*Restore, error) {
	return c.restore(ctx, http.MethodGet, "/restores/"+url.PathEscape(id), nil)
}

func (c *Client) restore(ctx context.Context, method, path string, in any) (*Restore, error) {
	var out struct {
		Restore json.RawMessage `json:"restore"`
	}
	if err := c.Do(ctx, method, path, nil, in, &out); err != nil {
		return nil, err
	}
	r := &Restore{Raw: out.Restore}
	return r, json.Unmarshal(out.Restore, r)
}

// Restores lists restores matching query (one page).
func (c *Client) Restores(ctx context.Context, query url.Values) ([]*Restore, error) {
	var out struct {
		Restores []json.RawMessage `json:"restores"`
	}
	if err := c.Do(ctx, http.MethodGet, "/restores", query, nil, &out); err != nil {
		return nil, err
	}
	rs := make([]*Restore, 0, len(out.Restores))
	for _, raw := range out.Restores {
		r := &Restore{Raw: raw}
		if err := json.Unmarshal(raw, r); err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}
