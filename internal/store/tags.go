package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// TaggedResource is a backup or a policy as tag queries see it.
type TaggedResource struct {
	ID   string
	Name string
	Tags []Tag
}

// maxTagRetries bounds how often UpdateItemTags retries when other writers
// keep changing the same backup's tags.
const maxTagRetries = 20

// tagTables are the tables of tagged records, with the condition that
// selects the live ones.
var tagTables = map[string]string{
	"items":    "deleted = 0",
	"policies": "1 = 1",
}

// ListItemTags reads only the id, name and tags columns, so that tag
// queries over a whole project stay cheap.
func (s *queries) ListItemTags(ctx context.Context, projectID string) ([]TaggedResource, error) {
	return s.listTags(ctx, "items", projectID)
}

// ListPolicyTags is ListItemTags of policies.
func (s *queries) ListPolicyTags(ctx context.Context, projectID string) ([]TaggedResource, error) {
	return s.listTags(ctx, "policies", projectID)
}

func (s *queries) listTags(ctx context.Context, table, projectID string) ([]TaggedResource, error) {
	op := "list tags of " + table
	rows, err := s.query(ctx, `SELECT id, name, tags FROM `+table+` WHERE project_id = ? AND `+tagTables[table]+`
		ORDER BY created_at DESC, id DESC`, projectID)
	if err != nil {
		return nil, s.fail(op, err)
	}
	defer rows.Close()
	var out []TaggedResource
	for rows.Next() {
		var (
			r    TaggedResource
			tags string
		)
		if err := rows.Scan(&r.ID, &r.Name, &tags); err != nil {
			return nil, s.fail(op, err)
		}
		if err := json.Unmarshal([]byte(tags), &r.Tags); err != nil {
			return nil, fmt.Errorf("store: %s %s: decode tags: %w", table, r.ID, err)
		}
		if len(r.Tags) == 0 {
			r.Tags = nil
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(op, err)
	}
	return out, nil
}

// UpdateItemTags is a compare-and-set on the stored tags text: the update
// applies only if the tags are still those fn saw, otherwise fn runs again
// on the new ones. This keeps concurrent tag changes from losing each other
// on both databases without row locks.
func (s *queries) UpdateItemTags(ctx context.Context, projectID, id string, fn func([]Tag) ([]Tag, error)) error {
	return s.updateTags(ctx, "items", projectID, id, fn)
}

// UpdatePolicyTags is UpdateItemTags of policies.
func (s *queries) UpdatePolicyTags(ctx context.Context, projectID, id string, fn func([]Tag) ([]Tag, error)) error {
	return s.updateTags(ctx, "policies", projectID, id, fn)
}

func (s *queries) updateTags(ctx context.Context, table, projectID, id string, fn func([]Tag) ([]Tag, error)) error {
	op := "update tags of " + table + " " + id
	live := tagTables[table]
	for range maxTagRetries {
		var old string
		err := s.queryRow(ctx, `SELECT tags FROM `+table+` WHERE project_id = ? AND id = ? AND `+live, projectID, id).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store: %s: %w", op, ErrNotFound)
		}
		if err != nil {
			return s.fail(op, err)
		}
		var cur []Tag
		if err := json.Unmarshal([]byte(old), &cur); err != nil {
			return fmt.Errorf("store: %s %s: decode tags: %w", table, id, err)
		}
		if len(cur) == 0 {
			cur = nil
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		b, err := json.Marshal(nonNil(next))
		if err != nil {
			return fmt.Errorf("store: %s %s: encode tags: %w", table, id, err)
		}
		if string(b) == old {
			return nil
		}
		res, err := s.exec(ctx, `UPDATE `+table+` SET tags = ?, updated_at = ?
			WHERE project_id = ? AND id = ? AND `+live+` AND tags = ?`,
			string(b), toMicros(now()), projectID, id, old)
		if err != nil {
			return s.fail(op, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return s.fail(op, err)
		}
		if n > 0 {
			return nil
		}
	}
	return fmt.Errorf("store: %s: the tags kept changing under %d attempts; try again", op, maxTagRetries)
}
