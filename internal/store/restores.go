package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Restore statuses, as the API names them.
const (
	RestoreInProgress = "in_progress"
	RestoreSuccess    = "success"
	RestoreFail       = "fail"
)

// Restore is a restoration task: the disks of one backup (checkpoint item)
// written onto the disks of a target server.
type Restore struct {
	ID           string
	ProjectID    string
	CheckpointID string
	ItemID       string // the backup restored
	ServerID     string // the target server
	Volumes      []VolumeMapping
	PowerOn      bool
	Target       string // restore_target of the request, kept as given
	Status       string // in_progress | success | fail
	// ResourcesStatus and ResourcesReason are keyed by resource
	// ("OS::Nova::Server#<id>", "OS::Cinder::Volume#<id>").
	ResourcesStatus map[string]string
	ResourcesReason map[string]string
	JobID           string
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// VolumeMapping says which disk backup goes onto which disk of the target.
type VolumeMapping struct {
	BackupID string `json:"backup_id"` // a VolumeBackup.ID of the item
	VolumeID string `json:"volume_id"` // a disk of the target server
}

// RestoreFilter selects restores for ListRestores. Zero fields do not
// filter. Restores are listed newest first.
type RestoreFilter struct {
	Status   string
	ServerID string // the target server
	Limit    int    // 0 = no limit
	Offset   int    // rows to skip after the marker
	Marker   string // id of the last restore of the previous page
}

const restoreColumns = `id, project_id, checkpoint_id, checkpoint_item_id, server_id, volumes, power_on,
	restore_target, status, resources_status, resources_reason, job_id, created_at, updated_at`

func scanRestore(sc scanner) (*Restore, error) {
	var (
		r                    Restore
		vols, rstat, rreason string
		power                int
		created, upd         int64
	)
	err := sc.Scan(&r.ID, &r.ProjectID, &r.CheckpointID, &r.ItemID, &r.ServerID, &vols, &power,
		&r.Target, &r.Status, &rstat, &rreason, &r.JobID, &created, &upd)
	if err != nil {
		return nil, err
	}
	r.PowerOn = power != 0
	r.CreatedAt, r.UpdatedAt = fromMicros(created), fromMicros(upd)
	for _, f := range []struct {
		s   string
		dst any
	}{{vols, &r.Volumes}, {rstat, &r.ResourcesStatus}, {rreason, &r.ResourcesReason}} {
		if err := json.Unmarshal([]byte(f.s), f.dst); err != nil {
			return nil, fmt.Errorf("store: restore %s: decode: %w", r.ID, err)
		}
	}
	return &r, nil
}

// encodeRestore returns the JSON columns of r.
func encodeRestore(r *Restore) (vols, rstat, rreason string, err error) {
	v, err := json.Marshal(nonNil(r.Volumes))
	if err != nil {
		return "", "", "", err
	}
	st, err := json.Marshal(nonNilMap(r.ResourcesStatus))
	if err != nil {
		return "", "", "", err
	}
	re, err := json.Marshal(nonNilMap(r.ResourcesReason))
	if err != nil {
		return "", "", "", err
	}
	return string(v), string(st), string(re), nil
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func powerFlag(b bool) int {
	if b {
		return 1
	}
	return 0
}

// InsertRestore stores r, giving it an id (a UUID), Status (in_progress)
// and CreatedAt/UpdatedAt (now) when empty. Like InsertItem it detects the
// conflict with ON CONFLICT DO NOTHING, so a PostgreSQL transaction stays
// usable.
func (s *queries) InsertRestore(ctx context.Context, r *Restore) error {
	if r.ID == "" {
		r.ID = uuid.NewString()
	}
	if r.Status == "" {
		r.Status = RestoreInProgress
	}
	r.CreatedAt = stamp(r.CreatedAt)
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = r.CreatedAt
	}
	r.UpdatedAt = stamp(r.UpdatedAt)
	vols, rstat, rreason, err := encodeRestore(r)
	if err != nil {
		return fmt.Errorf("store: restore %s: encode: %w", r.ID, err)
	}
	res, err := s.exec(ctx, `INSERT INTO restores (`+restoreColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`,
		r.ID, r.ProjectID, r.CheckpointID, r.ItemID, r.ServerID, vols, powerFlag(r.PowerOn),
		r.Target, r.Status, rstat, rreason, r.JobID, toMicros(r.CreatedAt), toMicros(r.UpdatedAt))
	if err != nil {
		return s.fail("insert restore "+r.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail("insert restore "+r.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("store: insert restore %s: id exists or a restore onto server %s is in progress: %w", r.ID, r.ServerID, ErrConflict)
	}
	return nil
}

func (s *queries) queryRestore(ctx context.Context, op, q string, args ...any) (*Restore, error) {
	r, err := scanRestore(s.queryRow(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	if err != nil {
		return nil, s.fail(op, err)
	}
	return r, nil
}

func (s *queries) GetRestore(ctx context.Context, projectID, id string) (*Restore, error) {
	return s.queryRestore(ctx, "restore "+id,
		`SELECT `+restoreColumns+` FROM restores WHERE project_id = ? AND id = ?`, projectID, id)
}

func (s *queries) GetRestoreAnyProject(ctx context.Context, id string) (*Restore, error) {
	return s.queryRestore(ctx, "restore "+id, `SELECT `+restoreColumns+` FROM restores WHERE id = ?`, id)
}

// ListRestores pages by keyset on (created_at, id), newest first; a marker
// that names no restore of the project is ErrBadMarker.
func (s *queries) ListRestores(ctx context.Context, projectID string, f RestoreFilter) ([]*Restore, error) {
	q := `SELECT ` + restoreColumns + ` FROM restores WHERE project_id = ?`
	args := []any{projectID}
	if f.Status != "" {
		q += ` AND status = ?`
		args = append(args, f.Status)
	}
	if f.ServerID != "" {
		q += ` AND server_id = ?`
		args = append(args, f.ServerID)
	}
	if f.Marker != "" {
		var at int64
		err := s.queryRow(ctx, `SELECT created_at FROM restores WHERE project_id = ? AND id = ?`, projectID, f.Marker).Scan(&at)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("store: list restores after marker %q: %w", f.Marker, ErrBadMarker)
		}
		if err != nil {
			return nil, s.fail("look up marker "+f.Marker, err)
		}
		q += ` AND (created_at < ? OR (created_at = ? AND id < ?))`
		args = append(args, at, at, f.Marker)
	}
	q += ` ORDER BY created_at DESC, id DESC`
	q += s.page(f.Limit, f.Offset)
	return queryAll(ctx, s, "list restores", scanRestore, q, args...)
}

// UpdateRestore writes status, resources_status and resources_reason, and
// sets UpdatedAt.
func (s *queries) UpdateRestore(ctx context.Context, r *Restore) error {
	_, rstat, rreason, err := encodeRestore(r)
	if err != nil {
		return fmt.Errorf("store: restore %s: encode: %w", r.ID, err)
	}
	at := now()
	res, err := s.exec(ctx, `UPDATE restores SET status = ?, resources_status = ?, resources_reason = ?, updated_at = ?
		WHERE id = ?`, r.Status, rstat, rreason, toMicros(at), r.ID)
	if err != nil {
		return s.fail("update restore "+r.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.fail("update restore "+r.ID, err)
	} else if n == 0 {
		return fmt.Errorf("store: update restore %s: %w", r.ID, ErrNotFound)
	}
	r.UpdatedAt = at
	return nil
}
