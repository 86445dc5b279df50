package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Verification is the outcome of the last verification of a backup: when
// the repository last read and authenticated everything it references, and
// what of it could not be restored then.
type Verification struct {
	ItemID     string
	ProjectID  string
	VerifiedAt time.Time
	Damaged    bool
	// Damage names, per disk, the offsets that cannot be restored (empty
	// when the backup is intact).
	Damage []DamagedVolume
	// Reason says in words what is wrong ("" when intact).
	Reason string
}

// DamagedVolume is the damage of one disk of a backup.
type DamagedVolume struct {
	VolumeID  string  `json:"volume_id"` // the source disk's id
	ChunkSize int     `json:"chunk_size"`
	Offsets   []int64 `json:"offsets"` // of each chunk of ChunkSize bytes that cannot be restored
}

// Verifications records and reads the verification of backups.
type Verifications interface {
	// RecordVerification replaces the verification of v.ItemID.
	RecordVerification(ctx context.Context, v *Verification) error
	// VerificationsOf returns the verifications of those of itemIDs that
	// have one, by item id.
	VerificationsOf(ctx context.Context, itemIDs []string) (map[string]*Verification, error)
	// ListVerifications returns the verifications of the backups of a
	// project ("": of every project) that are not deleted, only the
	// damaged ones when damagedOnly, newest backup first.
	ListVerifications(ctx context.Context, projectID string, damagedOnly bool) ([]*Verification, error)
	// DueVerifications returns up to limit available backups of a
	// project ("": of every project) never verified or last verified
	// before t: those never verified first (oldest first), then the least
	// recently verified.
	DueVerifications(ctx context.Context, projectID string, t time.Time, limit int) ([]*Item, error)
	// CountDamaged counts the backups that are not deleted and whose last
	// verification found them damaged.
	CountDamaged(ctx context.Context) (int, error)
}

// RecordVerification upserts v.
func (s *queries) RecordVerification(ctx context.Context, v *Verification) error {
	dmg := v.Damage
	if dmg == nil {
		dmg = []DamagedVolume{}
	}
	b, err := json.Marshal(dmg)
	if err != nil {
		return err
	}
	damaged := 0
	if v.Damaged {
		damaged = 1
	}
	_, err = s.exec(ctx, `INSERT INTO verifications (item_id, project_id, verified_at, damaged, damage, reason)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (item_id) DO UPDATE SET project_id = excluded.project_id, verified_at = excluded.verified_at,
			damaged = excluded.damaged, damage = excluded.damage, reason = excluded.reason`,
		v.ItemID, v.ProjectID, toMicros(v.VerifiedAt), damaged, string(b), v.Reason)
	if err != nil {
		return s.fail("record verification of backup "+v.ItemID, err)
	}
	return nil
}

const verificationColumns = `v.item_id, v.project_id, v.verified_at, v.damaged, v.damage, v.reason`

func scanVerification(sc scanner) (*Verification, error) {
	var (
		v       Verification
		at      int64
		damaged int
		dmg     string
	)
	if err := sc.Scan(&v.ItemID, &v.ProjectID, &at, &damaged, &dmg, &v.Reason); err != nil {
		return nil, err
	}
	v.VerifiedAt, v.Damaged = fromMicros(at), damaged != 0
	if err := json.Unmarshal([]byte(dmg), &v.Damage); err != nil {
		return nil, fmt.Errorf("store: verification of backup %s: decode damage: %w", v.ItemID, err)
	}
	if len(v.Damage) == 0 {
		v.Damage = nil
	}
	return &v, nil
}

func (s *queries) queryVerifications(ctx context.Context, op, query string, args ...any) ([]*Verification, error) {
	return queryAll(ctx, s, op, scanVerification, query, args...)
}

// VerificationsOf reads the verifications of itemIDs, in batches.
func (s *queries) VerificationsOf(ctx context.Context, itemIDs []string) (map[string]*Verification, error) {
	out := make(map[string]*Verification)
	for len(itemIDs) > 0 {
		n := min(len(itemIDs), 500)
		vs, err := s.queryVerifications(ctx, "read verifications",
			`SELECT `+verificationColumns+` FROM verifications v WHERE v.item_id IN (`+marks(n)+`)`, anySlice(itemIDs[:n])...)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			out[v.ItemID] = v
		}
		itemIDs = itemIDs[n:]
	}
	return out, nil
}

// ListVerifications lists the verifications of live backups.
func (s *queries) ListVerifications(ctx context.Context, projectID string, damagedOnly bool) ([]*Verification, error) {
	q := `SELECT ` + verificationColumns + ` FROM verifications v JOIN items i ON i.id = v.item_id
		WHERE i.deleted = 0`
	var args []any
	if projectID != "" {
		q += ` AND v.project_id = ?`
		args = append(args, projectID)
	}
	if damagedOnly {
		q += ` AND v.damaged = 1`
	}
	q += ` ORDER BY i.created_at DESC, i.id`
	return s.queryVerifications(ctx, "list verifications", q, args...)
}

// DueVerifications lists the backups a verification should read next.
func (s *queries) DueVerifications(ctx context.Context, projectID string, t time.Time, limit int) ([]*Item, error) {
	q := `SELECT ` + prefixed("i.", itemColumns) + ` FROM items i LEFT JOIN verifications v ON v.item_id = i.id
		WHERE i.deleted = 0 AND i.status = ? AND (v.item_id IS NULL OR v.verified_at < ?)`
	args := []any{StatusAvailable, toMicros(t)}
	if projectID != "" {
		q += ` AND i.project_id = ?`
		args = append(args, projectID)
	}
	q += ` ORDER BY COALESCE(v.verified_at, 0), i.created_at, i.id LIMIT ?`
	return s.queryItems(ctx, "list backups due for verification", q, append(args, limit)...)
}

// CountDamaged counts the live backups found damaged.
func (s *queries) CountDamaged(ctx context.Context) (int, error) {
	var n int
	err := s.queryRow(ctx, `SELECT COUNT(*) FROM verifications v JOIN items i ON i.id = v.item_id
		WHERE i.deleted = 0 AND v.damaged = 1`).Scan(&n)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, s.fail("count damaged backups", err)
	}
	return n, nil
}

// prefixed qualifies every column of a comma-separated list with p.
func prefixed(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}
