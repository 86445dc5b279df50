package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// fail wraps err of operation op, naming a broken uniqueness rule
// ErrConflict and a missing referenced record ErrNotFound.
func (s *queries) fail(op string, err error) error {
	switch s.d.constraint(err) {
	case uniqueViolation:
		return fmt.Errorf("store: %s: %w (%v)", op, ErrConflict, err)
	case foreignKeyViolation:
		return fmt.Errorf("store: %s: a record it refers to does not exist: %w (%v)", op, ErrNotFound, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// InsertCheckpoint stores cp, giving it an id (a UUID) and CreatedAt (now)
// when they are empty. A duplicate id is ErrConflict.
func (s *queries) InsertCheckpoint(ctx context.Context, cp *Checkpoint) error {
	if cp.ID == "" {
		cp.ID = uuid.NewString()
	}
	cp.CreatedAt = stamp(cp.CreatedAt)
	res, err := json.Marshal(nonNil(cp.Resources))
	if err != nil {
		return fmt.Errorf("store: encode checkpoint resources: %w", err)
	}
	var extra any // NULL when absent
	if len(cp.ExtraInfo) > 0 {
		extra = string(cp.ExtraInfo)
	}
	_, err = s.exec(ctx, `INSERT INTO checkpoints (id, project_id, plan_id, plan_name, resources, extra_info, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		cp.ID, cp.ProjectID, cp.PlanID, cp.PlanName, string(res), extra, toMicros(cp.CreatedAt))
	if err != nil {
		return s.fail("insert checkpoint "+cp.ID, err)
	}
	return nil
}

func (s *queries) GetCheckpoint(ctx context.Context, projectID, id string) (*Checkpoint, error) {
	var (
		cp    Checkpoint
		res   string
		extra sql.NullString
		at    int64
	)
	err := s.queryRow(ctx, `SELECT id, project_id, plan_id, plan_name, resources, extra_info, created_at
		FROM checkpoints WHERE project_id = ? AND id = ?`, projectID, id).
		Scan(&cp.ID, &cp.ProjectID, &cp.PlanID, &cp.PlanName, &res, &extra, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: checkpoint %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, s.fail("get checkpoint "+id, err)
	}
	if err := json.Unmarshal([]byte(res), &cp.Resources); err != nil {
		return nil, fmt.Errorf("store: checkpoint %s: decode resources: %w", id, err)
	}
	if len(cp.Resources) == 0 {
		cp.Resources = nil
	}
	if extra.Valid {
		cp.ExtraInfo = json.RawMessage(extra.String)
	}
	cp.CreatedAt = fromMicros(at)
	return &cp, nil
}

// itemColumns are the columns scanItem reads, in its order.
const itemColumns = `id, checkpoint_id, project_id, name, description, status, resource_id, resource_name,
	resource_type, resource_az, policy_id, created_at, updated_at, tags, info`

type scanner interface{ Scan(dest ...any) error }

func scanItem(sc scanner) (*Item, error) {
	var (
		it           Item
		created, upd int64
		tags, info   string
	)
	err := sc.Scan(&it.ID, &it.CheckpointID, &it.ProjectID, &it.Name, &it.Description, &it.Status,
		&it.ResourceID, &it.ResourceName, &it.ResourceType, &it.ResourceAZ, &it.PolicyID,
		&created, &upd, &tags, &info)
	if err != nil {
		return nil, err
	}
	it.CreatedAt, it.UpdatedAt = fromMicros(created), fromMicros(upd)
	if err := json.Unmarshal([]byte(tags), &it.Tags); err != nil {
		return nil, fmt.Errorf("store: backup %s: decode tags: %w", it.ID, err)
	}
	if len(it.Tags) == 0 {
		it.Tags = nil
	}
	if err := json.Unmarshal([]byte(info), &it.Info); err != nil {
		return nil, fmt.Errorf("store: backup %s: decode info: %w", it.ID, err)
	}
	return &it, nil
}

// queryAll runs query and scans every row it returns with scan; op names
// the query in errors.
func queryAll[T any](ctx context.Context, s *queries, op string, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := s.query(ctx, query, args...)
	if err != nil {
		return nil, s.fail(op, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, s.fail(op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(op, err)
	}
	return out, nil
}

// queryItems runs a query of itemColumns.
func (s *queries) queryItems(ctx context.Context, op, query string, args ...any) ([]*Item, error) {
	return queryAll(ctx, s, op, scanItem, query, args...)
}

// queryItem runs a query of itemColumns that returns at most one row.
func (s *queries) queryItem(ctx context.Context, op, query string, args ...any) (*Item, error) {
	it, err := scanItem(s.queryRow(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	if err != nil {
		return nil, s.fail(op, err)
	}
	return it, nil
}

// encodeItem returns the JSON columns of it.
func encodeItem(it *Item) (tags, info string, err error) {
	t, err := json.Marshal(nonNil(it.Tags))
	if err != nil {
		return "", "", fmt.Errorf("store: backup %s: encode tags: %w", it.ID, err)
	}
	i, err := json.Marshal(it.Info)
	if err != nil {
		return "", "", fmt.Errorf("store: backup %s: encode info: %w", it.ID, err)
	}
	return string(t), string(i), nil
}

// InsertItem stores it, giving it an id (a UUID), CreatedAt (now),
// UpdatedAt (CreatedAt) and Status (waiting_protect) when they are empty.
// The conflict is detected with ON CONFLICT DO NOTHING rather than a
// failed statement, so that on PostgreSQL the surrounding transaction
// stays usable and the caller may go on without that backup.
func (s *queries) InsertItem(ctx context.Context, it *Item) error {
	if it.ID == "" {
		it.ID = uuid.NewString()
	}
	if it.Status == "" {
		it.Status = StatusWaitingProtect
	}
	it.CreatedAt = stamp(it.CreatedAt)
	if it.UpdatedAt.IsZero() {
		it.UpdatedAt = it.CreatedAt
	}
	it.UpdatedAt = stamp(it.UpdatedAt)
	tags, info, err := encodeItem(it)
	if err != nil {
		return err
	}
	res, err := s.exec(ctx, `INSERT INTO items (id, checkpoint_id, project_id, name, name_fold, description,
		status, resource_id, resource_name, resource_name_fold, resource_type, resource_az, policy_id,
		private_ip, created_at, updated_at, protected_at, deleted, tags, info)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`,
		it.ID, it.CheckpointID, it.ProjectID, it.Name, fold(it.Name), it.Description,
		it.Status, it.ResourceID, it.ResourceName, fold(it.ResourceName), it.ResourceType, it.ResourceAZ, it.PolicyID,
		it.Info.BackupData.PrivateIP, toMicros(it.CreatedAt), toMicros(it.UpdatedAt), toMicros(it.CreatedAt),
		deletedFlag(it.Status), tags, info)
	if err != nil {
		return s.fail("insert backup "+it.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail("insert backup "+it.ID, err)
	}
	if n == 0 {
		var one int
		err := s.queryRow(ctx, `SELECT 1 FROM items WHERE id = ?`, it.ID).Scan(&one)
		if err == nil {
			return fmt.Errorf("store: insert backup: id %s exists: %w", it.ID, ErrConflict)
		}
		return fmt.Errorf("store: insert backup: a backup of resource %s is already waiting or running: %w", it.ResourceID, ErrConflict)
	}
	return nil
}

func (s *queries) GetItem(ctx context.Context, projectID, id string) (*Item, error) {
	return s.queryItem(ctx, "backup "+id,
		`SELECT `+itemColumns+` FROM items WHERE project_id = ? AND id = ? AND deleted = 0`, projectID, id)
}

func (s *queries) GetItemAnyProject(ctx context.Context, id string) (*Item, error) {
	return s.queryItem(ctx, "backup "+id, `SELECT `+itemColumns+` FROM items WHERE id = ?`, id)
}

// ItemsOfCheckpoint returns the backups oldest first.
func (s *queries) ItemsOfCheckpoint(ctx context.Context, projectID, checkpointID string) ([]*Item, error) {
	return s.queryItems(ctx, "backups of checkpoint "+checkpointID,
		`SELECT `+itemColumns+` FROM items WHERE project_id = ? AND checkpoint_id = ? AND deleted = 0
		ORDER BY created_at, id`, projectID, checkpointID)
}

// LatestItem considers every non-deleted status when statuses is empty.
func (s *queries) LatestItem(ctx context.Context, projectID, resourceID string, statuses []string, before time.Time) (*Item, error) {
	q := `SELECT ` + itemColumns + ` FROM items WHERE project_id = ? AND resource_id = ? AND created_at < ?`
	args := []any{projectID, resourceID, toMicros(before)}
	if len(statuses) == 0 {
		q += ` AND deleted = 0`
	} else {
		q += ` AND status IN (` + marks(len(statuses)) + `)`
		for _, st := range statuses {
			args = append(args, st)
		}
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT 1`
	return s.queryItem(ctx, "latest backup of resource "+resourceID, q, args...)
}

// UpdateItem writes status, name, description and info (and the
// private_ip column taken from info), deleted or not.
func (s *queries) UpdateItem(ctx context.Context, it *Item) error {
	_, info, err := encodeItem(it)
	if err != nil {
		return err
	}
	at := now()
	// tags are not written: see UpdateItemTags.
	res, err := s.exec(ctx, `UPDATE items SET status = ?, deleted = ?, name = ?, name_fold = ?, description = ?,
		private_ip = ?, info = ?, updated_at = ?
		WHERE project_id = ? AND id = ?`,
		it.Status, deletedFlag(it.Status), it.Name, fold(it.Name), it.Description,
		it.Info.BackupData.PrivateIP, info, toMicros(at), it.ProjectID, it.ID)
	if err != nil {
		return s.fail("update backup "+it.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.fail("update backup "+it.ID, err)
	} else if n == 0 {
		return fmt.Errorf("store: update backup %s: %w", it.ID, ErrNotFound)
	}
	it.UpdatedAt = at
	return nil
}

// SetItemStatus is a compare-and-set: of several callers moving the same
// backup out of the same status, exactly one is told it did. An empty from
// matches nothing.
func (s *queries) SetItemStatus(ctx context.Context, id string, from []string, to string) (bool, error) {
	if len(from) == 0 {
		return false, nil
	}
	args := []any{to, deletedFlag(to), toMicros(now()), id}
	for _, st := range from {
		args = append(args, st)
	}
	res, err := s.exec(ctx, `UPDATE items SET status = ?, deleted = ?, updated_at = ?
		WHERE id = ? AND status IN (`+marks(len(from))+`)`, args...)
	if err != nil {
		return false, s.fail("set status of backup "+id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, s.fail("set status of backup "+id, err)
	}
	return n > 0, nil
}

// marks returns n comma-separated placeholders.
func marks(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// fold is the case folding of the name filters, done here rather than in
// SQL because SQLite's lower() folds ASCII only.
func fold(s string) string { return strings.ToLower(s) }

func deletedFlag(status string) int {
	if status == StatusDeleted {
		return 1
	}
	return 0
}

// stamp is t in UTC at the precision the database keeps, or now if t is zero.
func stamp(t time.Time) time.Time {
	if t.IsZero() {
		return now()
	}
	return t.UTC().Truncate(time.Microsecond)
}

// nonNil makes a nil slice encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
