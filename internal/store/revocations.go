package store

import (
	"context"
	"fmt"
	"time"
)

// RevokeToken records that the token with id is revoked. The record is kept
// until expires (the token's own expiry, after which it is invalid anyway);
// records of tokens that have expired are purged on the way. Revoking a
// token twice is not an error.
func (s *queries) RevokeToken(ctx context.Context, id string, expires time.Time) error {
	if _, err := s.exec(ctx, `DELETE FROM revoked_tokens WHERE expires_at < ?`, toMicros(now())); err != nil {
		return fmt.Errorf("store: purge revoked tokens: %w", err)
	}
	_, err := s.exec(ctx, `INSERT INTO revoked_tokens (id, expires_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, id, toMicros(expires))
	if err != nil {
		return fmt.Errorf("store: revoke token: %w", err)
	}
	return nil
}

// TokenRevoked reports whether the token with id was revoked.
func (s *queries) TokenRevoked(ctx context.Context, id string) (bool, error) {
	var n int
	if err := s.queryRow(ctx, `SELECT COUNT(*) FROM revoked_tokens WHERE id = ?`, id).Scan(&n); err != nil {
		return false, fmt.Errorf("store: look up revoked token: %w", err)
	}
	return n > 0, nil
}
