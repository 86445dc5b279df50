package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// sortColumns maps the API's sort keys to item columns.
var sortColumns = map[string]string{
	"created_at":   "created_at",
	"updated_at":   "updated_at",
	"name":         "name",
	"status":       "status",
	"protected_at": "protected_at",
	"id":           "id",
}

// sortOrder returns the sort keys of f with duplicates dropped and the id
// appended as the final tie-breaker (in the direction of the last key), so
// that the order is total and a marker names one position in it.
func sortOrder(keys []SortKey) ([]SortKey, error) {
	if len(keys) == 0 {
		keys = []SortKey{{Key: "created_at", Desc: true}}
	}
	var out []SortKey
	seen := map[string]bool{}
	for _, k := range keys {
		if _, ok := sortColumns[k.Key]; !ok {
			return nil, fmt.Errorf("store: sort by %q: %w (use created_at, updated_at, name, status, protected_at or id)", k.Key, ErrBadSortKey)
		}
		if seen[k.Key] {
			continue
		}
		seen[k.Key] = true
		out = append(out, k)
		if k.Key == "id" {
			return out, nil
		}
	}
	return append(out, SortKey{Key: "id", Desc: out[len(out)-1].Desc}), nil
}

// itemWhere returns the WHERE condition selecting the backups f matches,
// paging aside.
func itemWhere(projectID string, f ItemFilter) (string, []any) {
	conds := []string{"deleted = 0"}
	var args []any
	add := func(cond string, a ...any) {
		conds = append(conds, cond)
		args = append(args, a...)
	}
	if !f.AllTenants {
		add("project_id = ?", projectID)
	}
	if len(f.Statuses) > 0 {
		add("status IN (?"+strings.Repeat(", ?", len(f.Statuses)-1)+")", anySlice(f.Statuses)...)
	}
	eq := []struct{ col, v string }{
		{"resource_id", f.ResourceID},
		{"resource_az", f.AZ},
		{"policy_id", f.PolicyID},
		{"checkpoint_id", f.CheckpointID},
		{"resource_type", f.ResourceType},
		{"private_ip", f.IP},
	}
	for _, e := range eq {
		if e.v != "" {
			add(e.col+" = ?", e.v)
		}
	}
	if f.Name != "" {
		add(`name_fold LIKE ? ESCAPE '\'`, containsPattern(f.Name))
	}
	if f.ResourceName != "" {
		add(`resource_name_fold LIKE ? ESCAPE '\'`, containsPattern(f.ResourceName))
	}
	switch f.ImageType {
	case "", "backup":
	default:
		add("1 = 0") // every backup is of image type "backup"
	}
	if f.StartTime != nil {
		add("created_at >= ?", toMicros(*f.StartTime))
	}
	if f.EndTime != nil {
		add("created_at <= ?", toMicros(*f.EndTime))
	}
	return strings.Join(conds, " AND "), args
}

// containsPattern is a LIKE pattern (escape character \) matching strings
// that contain s, case-folded.
func containsPattern(s string) string {
	esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + esc.Replace(fold(s)) + "%"
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// ListItems pages by keyset: the marker's sort values are looked up (the
// marker may have been deleted since: its values still order the rows), and
// the page holds the rows strictly after them in the sort order, then skips
// Offset rows and returns at most Limit.
func (s *queries) ListItems(ctx context.Context, projectID string, f ItemFilter) ([]*Item, error) {
	keys, err := sortOrder(f.Sort)
	if err != nil {
		return nil, err
	}
	where, args := itemWhere(projectID, f)
	if f.Marker != "" {
		cond, margs, err := s.afterMarker(ctx, projectID, f, keys)
		if err != nil {
			return nil, err
		}
		where += " AND " + cond
		args = append(args, margs...)
	}
	order := make([]string, len(keys))
	for i, k := range keys {
		order[i] = sortColumns[k.Key] + direction(k.Desc)
	}
	q := `SELECT ` + itemColumns + ` FROM items WHERE ` + where + ` ORDER BY ` + strings.Join(order, ", ")
	q += s.page(f.Limit, f.Offset)
	return s.queryItems(ctx, "list backups", q, args...)
}

func direction(desc bool) string {
	if desc {
		return " DESC"
	}
	return " ASC"
}

// afterMarker returns the condition "after the marker row in the order of
// keys": (k1 > v1) OR (k1 = v1 AND k2 > v2) OR …, with < for descending keys.
func (s *queries) afterMarker(ctx context.Context, projectID string, f ItemFilter, keys []SortKey) (string, []any, error) {
	q := `SELECT created_at, updated_at, name, status, protected_at, id FROM items WHERE id = ?`
	args := []any{f.Marker}
	if !f.AllTenants {
		q += ` AND project_id = ?`
		args = append(args, projectID)
	}
	var (
		created, updated, protected int64
		name, status, id            string
	)
	err := s.queryRow(ctx, q, args...).Scan(&created, &updated, &name, &status, &protected, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, fmt.Errorf("store: list backups after marker %q: %w", f.Marker, ErrBadMarker)
	}
	if err != nil {
		return "", nil, s.fail("look up marker "+f.Marker, err)
	}
	vals := map[string]any{
		"created_at": created, "updated_at": updated, "name": name,
		"status": status, "protected_at": protected, "id": id,
	}
	var (
		ors   []string
		cargs []any
	)
	for i, k := range keys {
		var ands []string
		for _, p := range keys[:i] {
			ands = append(ands, sortColumns[p.Key]+" = ?")
			cargs = append(cargs, vals[p.Key])
		}
		op := " > ?"
		if k.Desc {
			op = " < ?"
		}
		ands = append(ands, sortColumns[k.Key]+op)
		cargs = append(cargs, vals[k.Key])
		ors = append(ors, "("+strings.Join(ands, " AND ")+")")
	}
	return "(" + strings.Join(ors, " OR ") + ")", cargs, nil
}

// CountItems ignores the sort and paging fields of f.
func (s *queries) CountItems(ctx context.Context, projectID string, f ItemFilter) (int, error) {
	where, args := itemWhere(projectID, f)
	var n int
	if err := s.queryRow(ctx, `SELECT COUNT(*) FROM items WHERE `+where, args...).Scan(&n); err != nil {
		return 0, s.fail("count backups", err)
	}
	return n, nil
}

// page is the LIMIT/OFFSET clause of a list (limit 0: no limit). An
// OFFSET needs a LIMIT before it in SQLite, whose "no limit" is -1.
func (s *queries) page(limit, offset int) string {
	var q string
	switch {
	case limit > 0:
		q = " LIMIT " + strconv.Itoa(limit)
	case offset > 0:
		q = " LIMIT " + s.d.noLimit()
	}
	if offset > 0 {
		q += " OFFSET " + strconv.Itoa(offset)
	}
	return q
}
