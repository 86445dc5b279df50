package store

import (
	"context"
	"database/sql"
	"time"
)

// OldestJob returns when the oldest job with status was created, or the
// zero time when there is none.
func (s *sqlStore) OldestJob(ctx context.Context, status string) (time.Time, error) {
	var us sql.NullInt64
	err := s.queryRow(ctx, `SELECT MIN(created_at) FROM jobs WHERE status = ?`, status).Scan(&us)
	if err != nil {
		return time.Time{}, s.fail("oldest "+status+" job", err)
	}
	if !us.Valid {
		return time.Time{}, nil
	}
	return fromMicros(us.Int64), nil
}
