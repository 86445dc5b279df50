package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Policy is a backup policy (a plan): the servers it protects, when
// (its scheduled operations) and how long backups are kept.
type Policy struct {
	ID          string
	ProjectID   string
	Name        string
	Description string
	Parameters  json.RawMessage // policy_param as given ({"common": {...}}), or nil
	Resources   []Resource
	Operations  []ScheduledOperation // in the order given
	Tags        []Tag
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// ScheduledOperation is a policy's trigger with what to do when it fires.
type ScheduledOperation struct {
	ID            string
	Name          string
	Description   string
	Enabled       bool
	OperationType string // backup
	TriggerID     string
	TriggerName   string
	Pattern       string // iCalendar text
	StartTime     time.Time
	Definition    OperationDefinition
	// NextFire is the next fire time the scheduler acts on; nil while the
	// operation is disabled.
	NextFire *time.Time
}

// OperationDefinition is the retention of a scheduled operation. Nil
// fields were not given (the reference gives "not set" a meaning).
type OperationDefinition struct {
	MaxBackups            *int   `json:"max_backups,omitempty"`
	RetentionDurationDays *int   `json:"retention_duration_days,omitempty"`
	Permanent             *bool  `json:"permanent,omitempty"`
	DayBackups            *int   `json:"day_backups,omitempty"`
	WeekBackups           *int   `json:"week_backups,omitempty"`
	MonthBackups          *int   `json:"month_backups,omitempty"`
	YearBackups           *int   `json:"year_backups,omitempty"`
	Timezone              string `json:"timezone,omitempty"`
}

// PolicyFilter selects policies for ListPolicies.
type PolicyFilter struct {
	AllTenants bool   // every project (admin only; the caller checks)
	Name       string // exact match
	// Sort keys in order: created_at, updated_at, name, id. Default
	// created_at descending.
	Sort   []SortKey
	Limit  int    // 0 = no limit
	Offset int    // rows to skip after the marker
	Marker string // id of the last policy of the previous page
}

// DueOperation is an enabled scheduled operation whose next fire time has
// come.
type DueOperation struct {
	OperationID string
	PolicyID    string
	ProjectID   string
	Pattern     string
	NextFire    time.Time
}

// policySortKeys are the keys ListPolicies sorts by.
var policySortKeys = map[string]func(a, b *Policy) int{
	"created_at": func(a, b *Policy) int { return a.CreatedAt.Compare(b.CreatedAt) },
	"updated_at": func(a, b *Policy) int { return a.UpdatedAt.Compare(b.UpdatedAt) },
	"name":       func(a, b *Policy) int { return strings.Compare(a.Name, b.Name) },
	"id":         func(a, b *Policy) int { return strings.Compare(a.ID, b.ID) },
}

// PolicySortKey reports whether ListPolicies sorts by key.
func PolicySortKey(key string) bool { _, ok := policySortKeys[key]; return ok }

// InsertPolicy stores p with its operations and binds its resources to it,
// giving p, its operations and triggers ids (UUIDs) and CreatedAt/UpdatedAt
// (now) when empty. ErrConflict when one of the resources already belongs
// to a policy; run it in InTx so that a conflict found by the database
// (a concurrent binding) leaves nothing behind.
func (s *queries) InsertPolicy(ctx context.Context, p *Policy) error {
	if p.ID == "" {
		p.ID = uuid.NewString()
	}
	for _, r := range p.Resources {
		owner, err := s.PolicyOfResource(ctx, p.ProjectID, r.ID)
		if err == nil {
			return fmt.Errorf("store: server %s already belongs to policy %s: %w", r.ID, owner, ErrConflict)
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	p.CreatedAt = stamp(p.CreatedAt)
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = p.CreatedAt
	}
	p.UpdatedAt = stamp(p.UpdatedAt)
	res, tags, err := encodePolicy(p)
	if err != nil {
		return err
	}
	_, err = s.exec(ctx, `INSERT INTO policies (id, project_id, name, description, parameters, resources, tags, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.ProjectID, p.Name, p.Description, params(p.Parameters), res, tags,
		toMicros(p.CreatedAt), toMicros(p.UpdatedAt))
	if err != nil {
		return s.fail("insert policy "+p.ID, err)
	}
	if err := s.bindResources(ctx, p); err != nil {
		return err
	}
	for i := range p.Operations {
		if err := s.insertOperation(ctx, p, i); err != nil {
			return err
		}
	}
	return nil
}

func params(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "{}"
	}
	return string(raw)
}

func encodePolicy(p *Policy) (resources, tags string, err error) {
	r, err := json.Marshal(nonNil(p.Resources))
	if err != nil {
		return "", "", fmt.Errorf("store: policy %s: encode resources: %w", p.ID, err)
	}
	t, err := json.Marshal(nonNil(p.Tags))
	if err != nil {
		return "", "", fmt.Errorf("store: policy %s: encode tags: %w", p.ID, err)
	}
	return string(r), string(t), nil
}

// bindResources records that p's resources belong to p. A resource bound
// to another policy is ErrConflict.
func (s *queries) bindResources(ctx context.Context, p *Policy) error {
	for _, r := range p.Resources {
		var owner string
		err := s.queryRow(ctx, `SELECT policy_id FROM policy_resources WHERE project_id = ? AND resource_id = ?`,
			p.ProjectID, r.ID).Scan(&owner)
		switch {
		case err == nil && owner == p.ID:
			continue
		case err == nil:
			return fmt.Errorf("store: server %s already belongs to policy %s: %w", r.ID, owner, ErrConflict)
		case !errors.Is(err, sql.ErrNoRows):
			return s.fail("look up policy of server "+r.ID, err)
		}
		// A concurrent transaction binding the same server makes this a
		// unique violation: ErrConflict as well.
		if _, err := s.exec(ctx, `INSERT INTO policy_resources (project_id, resource_id, policy_id) VALUES (?, ?, ?)`,
			p.ProjectID, r.ID, p.ID); err != nil {
			return s.fail("bind server "+r.ID+" to policy "+p.ID, err)
		}
	}
	return nil
}

func (s *queries) insertOperation(ctx context.Context, p *Policy, pos int) error {
	op := &p.Operations[pos]
	if op.ID == "" {
		op.ID = uuid.NewString()
	}
	if op.TriggerID == "" {
		op.TriggerID = uuid.NewString()
	}
	op.StartTime = stamp(op.StartTime)
	def, err := json.Marshal(op.Definition)
	if err != nil {
		return fmt.Errorf("store: scheduled operation %s: encode definition: %w", op.ID, err)
	}
	_, err = s.exec(ctx, `INSERT INTO scheduled_operations (id, policy_id, project_id, position, name, description,
		enabled, operation_type, trigger_id, trigger_name, pattern, start_time, definition, next_fire)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		op.ID, p.ID, p.ProjectID, pos, op.Name, op.Description, policyBool(op.Enabled), op.OperationType,
		op.TriggerID, op.TriggerName, op.Pattern, toMicros(op.StartTime), string(def), optMicros(op.NextFire))
	if err != nil {
		return s.fail("insert scheduled operation "+op.ID, err)
	}
	return nil
}

// policyColumns are the columns scanPolicy reads, in its order.
const policyColumns = `id, project_id, name, description, parameters, resources, tags, created_at, updated_at`

func scanPolicy(sc scanner) (*Policy, error) {
	var (
		p                Policy
		par, res, tags   string
		created, updated int64
	)
	if err := sc.Scan(&p.ID, &p.ProjectID, &p.Name, &p.Description, &par, &res, &tags, &created, &updated); err != nil {
		return nil, err
	}
	if par != "{}" && par != "" {
		p.Parameters = json.RawMessage(par)
	}
	if err := json.Unmarshal([]byte(res), &p.Resources); err != nil {
		return nil, fmt.Errorf("store: policy %s: decode resources: %w", p.ID, err)
	}
	if len(p.Resources) == 0 {
		p.Resources = nil
	}
	if err := json.Unmarshal([]byte(tags), &p.Tags); err != nil {
		return nil, fmt.Errorf("store: policy %s: decode tags: %w", p.ID, err)
	}
	if len(p.Tags) == 0 {
		p.Tags = nil
	}
	p.CreatedAt, p.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &p, nil
}

// GetPolicy returns a policy of the project with its operations, or
// ErrNotFound.
func (s *queries) GetPolicy(ctx context.Context, projectID, id string) (*Policy, error) {
	p, err := scanPolicy(s.queryRow(ctx, `SELECT `+policyColumns+` FROM policies WHERE project_id = ? AND id = ?`, projectID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: policy %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, s.fail("get policy "+id, err)
	}
	ops, err := s.operations(ctx, `policy_id = ?`, p.ID)
	if err != nil {
		return nil, err
	}
	p.Operations = ops[p.ID]
	return p, nil
}

// operations returns the scheduled operations matching where, by policy id.
func (s *queries) operations(ctx context.Context, where string, args ...any) (map[string][]ScheduledOperation, error) {
	rows, err := s.query(ctx, `SELECT policy_id, id, name, description, enabled, operation_type, trigger_id,
		trigger_name, pattern, start_time, definition, next_fire
		FROM scheduled_operations WHERE `+where+` ORDER BY policy_id, position`, args...)
	if err != nil {
		return nil, s.fail("list scheduled operations", err)
	}
	defer rows.Close()
	out := map[string][]ScheduledOperation{}
	for rows.Next() {
		var (
			op       ScheduledOperation
			policy   string
			enabled  int
			start    int64
			def      string
			nextFire sql.NullInt64
		)
		if err := rows.Scan(&policy, &op.ID, &op.Name, &op.Description, &enabled, &op.OperationType, &op.TriggerID,
			&op.TriggerName, &op.Pattern, &start, &def, &nextFire); err != nil {
			return nil, s.fail("list scheduled operations", err)
		}
		op.Enabled = enabled != 0
		op.StartTime = fromMicros(start)
		if err := json.Unmarshal([]byte(def), &op.Definition); err != nil {
			return nil, fmt.Errorf("store: scheduled operation %s: decode definition: %w", op.ID, err)
		}
		if nextFire.Valid {
			t := fromMicros(nextFire.Int64)
			op.NextFire = &t
		}
		out[policy] = append(out[policy], op)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list scheduled operations", err)
	}
	return out, nil
}

// ListPolicies returns the policies matching f with their operations,
// sorted and paged. Policies are few per project (a configured limit), so
// they are sorted and paged here rather than in SQL. ErrBadMarker when
// f.Marker names no policy the caller can see; ErrBadSortKey for a key
// PolicySortKey refuses.
func (s *queries) ListPolicies(ctx context.Context, projectID string, f PolicyFilter) ([]*Policy, error) {
	q, args := `SELECT `+policyColumns+` FROM policies WHERE 1 = 1`, []any{}
	if !f.AllTenants {
		q += ` AND project_id = ?`
		args = append(args, projectID)
	}
	if f.Name != "" {
		q += ` AND name = ?`
		args = append(args, f.Name)
	}
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, s.fail("list policies", err)
	}
	var ps []*Policy
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			rows.Close()
			return nil, s.fail("list policies", err)
		}
		ps = append(ps, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, s.fail("list policies", err)
	}

	keys := f.Sort
	if len(keys) == 0 {
		keys = []SortKey{{Key: "created_at", Desc: true}}
	}
	for _, k := range keys {
		if !PolicySortKey(k.Key) {
			return nil, fmt.Errorf("store: sort policies by %q: %w (use created_at, updated_at, name or id)", k.Key, ErrBadSortKey)
		}
	}
	keys = append(keys, SortKey{Key: "id", Desc: keys[len(keys)-1].Desc})
	cmp := func(a, b *Policy) int {
		for _, k := range keys {
			c := policySortKeys[k.Key](a, b)
			if k.Desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	}
	sort.SliceStable(ps, func(i, j int) bool { return cmp(ps[i], ps[j]) < 0 })

	if f.Marker != "" {
		i := slices.IndexFunc(ps, func(p *Policy) bool { return p.ID == f.Marker })
		if i < 0 {
			// The marker may have been deleted since: go on from
			// where it stood. A marker the caller never saw is refused.
			m, err := s.policyMarker(ctx, projectID, f)
			if err != nil {
				return nil, err
			}
			i = sort.Search(len(ps), func(j int) bool { return cmp(ps[j], m) > 0 }) - 1
		}
		ps = ps[i+1:]
	}
	if f.Offset > 0 {
		ps = ps[min(f.Offset, len(ps)):]
	}
	if f.Limit > 0 && len(ps) > f.Limit {
		ps = ps[:f.Limit]
	}
	for _, p := range ps {
		ops, err := s.operations(ctx, `policy_id = ?`, p.ID)
		if err != nil {
			return nil, err
		}
		p.Operations = ops[p.ID]
	}
	return ps, nil
}

// CountPolicies counts the policies of the project.
func (s *queries) CountPolicies(ctx context.Context, projectID string) (int, error) {
	var n int
	if err := s.queryRow(ctx, `SELECT COUNT(*) FROM policies WHERE project_id = ?`, projectID).Scan(&n); err != nil {
		return 0, s.fail("count policies", err)
	}
	return n, nil
}

// UpdatePolicy writes name, description, parameters, resources (rebinding
// them), tags and the operations of p (matched by id; all their fields),
// and sets UpdatedAt. ErrNotFound when the policy does not exist,
// ErrConflict when a resource belongs to another policy.
func (s *queries) UpdatePolicy(ctx context.Context, p *Policy) error {
	res, tags, err := encodePolicy(p)
	if err != nil {
		return err
	}
	at := now()
	r, err := s.exec(ctx, `UPDATE policies SET name = ?, description = ?, parameters = ?, resources = ?, tags = ?, updated_at = ?
		WHERE project_id = ? AND id = ?`,
		p.Name, p.Description, params(p.Parameters), res, tags, toMicros(at), p.ProjectID, p.ID)
	if err != nil {
		return s.fail("update policy "+p.ID, err)
	}
	if n, err := r.RowsAffected(); err != nil {
		return s.fail("update policy "+p.ID, err)
	} else if n == 0 {
		return fmt.Errorf("store: update policy %s: %w", p.ID, ErrNotFound)
	}
	if _, err := s.exec(ctx, `DELETE FROM policy_resources WHERE policy_id = ?`, p.ID); err != nil {
		return s.fail("unbind servers of policy "+p.ID, err)
	}
	if err := s.bindResources(ctx, p); err != nil {
		return err
	}
	for i, op := range p.Operations {
		def, err := json.Marshal(op.Definition)
		if err != nil {
			return fmt.Errorf("store: scheduled operation %s: encode definition: %w", op.ID, err)
		}
		r, err := s.exec(ctx, `UPDATE scheduled_operations SET position = ?, name = ?, description = ?, enabled = ?,
			operation_type = ?, trigger_name = ?, pattern = ?, start_time = ?, definition = ?, next_fire = ?
			WHERE policy_id = ? AND id = ?`,
			i, op.Name, op.Description, policyBool(op.Enabled), op.OperationType, op.TriggerName, op.Pattern,
			toMicros(op.StartTime), string(def), optMicros(op.NextFire), p.ID, op.ID)
		if err != nil {
			return s.fail("update scheduled operation "+op.ID, err)
		}
		if n, err := r.RowsAffected(); err != nil {
			return s.fail("update scheduled operation "+op.ID, err)
		} else if n == 0 {
			if err := s.insertOperation(ctx, p, i); err != nil {
				return err
			}
		}
	}
	p.UpdatedAt = at
	return nil
}

// DeletePolicy removes a policy, its operations and its server bindings;
// its backups stay. ErrNotFound when there is no such policy.
func (s *queries) DeletePolicy(ctx context.Context, projectID, id string) error {
	var one int
	err := s.queryRow(ctx, `SELECT 1 FROM policies WHERE project_id = ? AND id = ?`, projectID, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: delete policy %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return s.fail("delete policy "+id, err)
	}
	// Where it stood in lists, for clients paging with it as marker.
	at := now()
	if _, err := s.exec(ctx, `DELETE FROM policy_markers WHERE deleted_at < ?`, toMicros(at.Add(-markerTTL))); err != nil {
		return s.fail("delete policy "+id, err)
	}
	if _, err := s.exec(ctx, `INSERT INTO policy_markers (id, project_id, name, created_at, updated_at, deleted_at)
		SELECT id, project_id, name, created_at, updated_at, ? FROM policies WHERE id = ?`, toMicros(at), id); err != nil {
		return s.fail("delete policy "+id, err)
	}
	// Children first: the foreign keys' ON DELETE CASCADE needs
	// foreign_keys on, which SQLite connections opened elsewhere may lack.
	for _, q := range []string{
		`DELETE FROM scheduled_operations WHERE policy_id = ?`,
		`DELETE FROM policy_resources WHERE policy_id = ?`,
		`DELETE FROM policies WHERE id = ?`,
	} {
		if _, err := s.exec(ctx, q, id); err != nil {
			return s.fail("delete policy "+id, err)
		}
	}
	return nil
}

// policyMarker returns the sort values of a deleted policy named by
// f.Marker, or ErrBadMarker.
func (s *queries) policyMarker(ctx context.Context, projectID string, f PolicyFilter) (*Policy, error) {
	q, args := `SELECT id, name, created_at, updated_at FROM policy_markers WHERE id = ?`, []any{f.Marker}
	if !f.AllTenants {
		q += ` AND project_id = ?`
		args = append(args, projectID)
	}
	var (
		m                Policy
		created, updated int64
	)
	err := s.queryRow(ctx, q, args...).Scan(&m.ID, &m.Name, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: list policies after marker %q: %w", f.Marker, ErrBadMarker)
	}
	if err != nil {
		return nil, s.fail("look up policy marker "+f.Marker, err)
	}
	m.CreatedAt, m.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &m, nil
}

// markerTTL is how long a deleted policy can still be paged after.
const markerTTL = 24 * time.Hour

// PolicyOfResource returns the id of the policy a server of the project
// belongs to, or ErrNotFound.
func (s *queries) PolicyOfResource(ctx context.Context, projectID, resourceID string) (string, error) {
	var id string
	err := s.queryRow(ctx, `SELECT policy_id FROM policy_resources WHERE project_id = ? AND resource_id = ?`,
		projectID, resourceID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("store: policy of server %s: %w", resourceID, ErrNotFound)
	}
	if err != nil {
		return "", s.fail("policy of server "+resourceID, err)
	}
	return id, nil
}

// DueOperations returns the enabled operations of every project whose
// next fire time is at or before t, earliest first.
func (s *queries) DueOperations(ctx context.Context, t time.Time) ([]DueOperation, error) {
	rows, err := s.query(ctx, `SELECT id, policy_id, project_id, pattern, next_fire FROM scheduled_operations
		WHERE enabled = 1 AND next_fire IS NOT NULL AND next_fire <= ? ORDER BY next_fire, id`, toMicros(t))
	if err != nil {
		return nil, s.fail("list due operations", err)
	}
	defer rows.Close()
	var out []DueOperation
	for rows.Next() {
		var (
			d    DueOperation
			next int64
		)
		if err := rows.Scan(&d.OperationID, &d.PolicyID, &d.ProjectID, &d.Pattern, &next); err != nil {
			return nil, s.fail("list due operations", err)
		}
		d.NextFire = fromMicros(next)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list due operations", err)
	}
	return out, nil
}

// AdvanceOperation moves the next fire time of an operation from `from`
// to `to` (nil: none) if it still is `from`; it reports whether it did.
// Of several processes advancing the same fire time, exactly one is told
// it did.
func (s *queries) AdvanceOperation(ctx context.Context, operationID string, from time.Time, to *time.Time) (bool, error) {
	r, err := s.exec(ctx, `UPDATE scheduled_operations SET next_fire = ? WHERE id = ? AND next_fire = ?`,
		optMicros(to), operationID, toMicros(from))
	if err != nil {
		return false, s.fail("advance scheduled operation "+operationID, err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, s.fail("advance scheduled operation "+operationID, err)
	}
	return n > 0, nil
}

// InsertFire records that an operation fired for fireTime. It reports
// false, changing nothing, when that fire time was recorded before (by
// this or another process). The conflict is detected with ON CONFLICT DO
// NOTHING so that on PostgreSQL the transaction stays usable.
func (s *queries) InsertFire(ctx context.Context, operationID string, fireTime time.Time, policyID, checkpointID string) (bool, error) {
	r, err := s.exec(ctx, `INSERT INTO policy_fires (operation_id, fire_time, policy_id, checkpoint_id, created_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		operationID, toMicros(fireTime), policyID, checkpointID, toMicros(now()))
	if err != nil {
		return false, s.fail("record fire of operation "+operationID, err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, s.fail("record fire of operation "+operationID, err)
	}
	return n > 0, nil
}

// policyBool is the stored form of a flag.
func policyBool(b bool) int {
	if b {
		return 1
	}
	return 0
}
