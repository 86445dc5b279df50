package store

import "context"

// ItemSize is what one backup holds, as quotas count it.
type ItemSize struct {
	ResourceID string
	UsedBytes  int64 // ItemInfo.UsedBytes: the data of the disks
	SizeBytes  int64 // ItemInfo.SizeBytes: used data (full) or changed data (incremental)
}

// ItemSizes reads the two sizes out of the info document in the database:
// reading whole documents to add two numbers would not scale.
func (s *queries) ItemSizes(ctx context.Context, projectID string) ([]ItemSize, error) {
	used, size := `json_extract(info, '$.used_bytes')`, `json_extract(info, '$.size_bytes')`
	if _, ok := s.d.(postgresDialect); ok {
		used, size = `(info::jsonb ->> 'used_bytes')::bigint`, `(info::jsonb ->> 'size_bytes')::bigint`
	}
	rows, err := s.query(ctx, `SELECT resource_id, COALESCE(`+used+`, 0), COALESCE(`+size+`, 0) FROM items
		WHERE project_id = ? AND deleted = 0 ORDER BY resource_id, created_at, id`, projectID)
	if err != nil {
		return nil, s.fail("sizes of the backups of project "+projectID, err)
	}
	defer rows.Close()
	var out []ItemSize
	for rows.Next() {
		var is ItemSize
		if err := rows.Scan(&is.ResourceID, &is.UsedBytes, &is.SizeBytes); err != nil {
			return nil, s.fail("sizes of the backups of project "+projectID, err)
		}
		out = append(out, is)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("sizes of the backups of project "+projectID, err)
	}
	return out, nil
}
