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

// jobColumns are the columns scanJob reads, in its order.
const jobColumns = `id, kind, project_id, checkpoint_id, item_id, plan_id, restore_id, args, status, attempt,
	lease_owner, lease_until, error, created_at, started_at, finished_at, node`

func scanJob(sc scanner) (*Job, error) {
	var (
		j                 Job
		args              sql.NullString
		until, created    int64
		started, finished sql.NullInt64
	)
	err := sc.Scan(&j.ID, &j.Kind, &j.ProjectID, &j.CheckpointID, &j.ItemID, &j.PlanID, &j.RestoreID,
		&args, &j.Status, &j.Attempt, &j.LeaseOwner, &until, &j.Error, &created, &started, &finished, &j.Node)
	if err != nil {
		return nil, err
	}
	if args.Valid {
		j.Args = json.RawMessage(args.String)
	}
	if until != 0 {
		j.LeaseUntil = fromMicros(until)
	}
	j.CreatedAt = fromMicros(created)
	if started.Valid {
		t := fromMicros(started.Int64)
		j.StartedAt = &t
	}
	if finished.Valid {
		t := fromMicros(finished.Int64)
		j.FinishedAt = &t
	}
	return &j, nil
}

// InsertJob stores j, giving it an id (a UUID), Status (queued) and
// CreatedAt (now) when they are empty. A duplicate id is ErrConflict.
func (s *queries) InsertJob(ctx context.Context, j *Job) error {
	if j.ID == "" {
		j.ID = uuid.NewString()
	}
	if j.Status == "" {
		j.Status = JobQueued
	}
	j.CreatedAt = stamp(j.CreatedAt)
	var args any // NULL when absent
	if len(j.Args) > 0 {
		args = string(j.Args)
	}
	var until int64
	if !j.LeaseUntil.IsZero() {
		until = toMicros(j.LeaseUntil)
	}
	_, err := s.exec(ctx, `INSERT INTO jobs (id, kind, project_id, checkpoint_id, item_id, plan_id, restore_id,
		args, status, attempt, lease_owner, lease_until, error, created_at, started_at, finished_at, node)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		j.ID, j.Kind, j.ProjectID, j.CheckpointID, j.ItemID, j.PlanID, j.RestoreID,
		args, j.Status, j.Attempt, j.LeaseOwner, until, j.Error, toMicros(j.CreatedAt),
		optMicros(j.StartedAt), optMicros(j.FinishedAt), j.Node)
	if err != nil {
		return s.fail("insert job "+j.ID, err)
	}
	return nil
}

func (s *queries) GetJob(ctx context.Context, id string) (*Job, error) {
	j, err := scanJob(s.queryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, s.fail("get job "+id, err)
	}
	return j, nil
}

// ClaimJob is one UPDATE … RETURNING, so the choice and the claim are
// atomic: on PostgreSQL the candidate row is locked with SKIP LOCKED (a
// concurrent claimer passes to the next job instead of waiting, and
// re-checks a row another claimer changed meanwhile); on SQLite the
// statement holds the database's write lock from its start. StartedAt
// keeps the time of the first claim. Owners must be unique per worker: a
// lease is known by its owner.
func (s *sqlStore) ClaimJob(ctx context.Context, owner, node string, lease time.Duration) (*Job, error) {
	t := now()
	where, args := ``, []any{owner, toMicros(t.Add(lease)), toMicros(t), toMicros(t)}
	if node != "" {
		where = ` AND node IN ('', ?)`
		args = append(args, node)
	}
	j, err := scanJob(s.queryRow(ctx, `UPDATE jobs
		SET status = 'running', attempt = attempt + 1, lease_owner = ?, lease_until = ?,
			started_at = COALESCE(started_at, ?)
		WHERE id IN (SELECT id FROM jobs
			WHERE (status = 'queued' OR (status = 'running' AND lease_until < ?))`+where+`
			ORDER BY created_at, id LIMIT 1`+s.d.skipLocked()+`)
		RETURNING `+jobColumns, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, s.fail("claim job", err)
	}
	s.gen.Add(1)
	return j, nil
}

// RenewLease succeeds while owner holds the job, even past the lease's
// end if no one has claimed the job since.
func (s *sqlStore) RenewLease(ctx context.Context, jobID, owner string, lease time.Duration) error {
	res, err := s.exec(ctx, `UPDATE jobs SET lease_until = ?
		WHERE id = ? AND lease_owner = ? AND status = 'running'`,
		toMicros(now().Add(lease)), jobID, owner)
	return s.leased("renew lease of job "+jobID, res, err)
}

// FinishJob, like RenewLease, succeeds while owner holds the job.
func (s *sqlStore) FinishJob(ctx context.Context, jobID, owner, errMsg string) error {
	status := JobSucceeded
	if errMsg != "" {
		status = JobFailed
	}
	res, err := s.exec(ctx, `UPDATE jobs SET status = ?, error = ?, finished_at = ?
		WHERE id = ? AND lease_owner = ? AND status = 'running'`,
		status, errMsg, toMicros(now()), jobID, owner)
	return s.leased("finish job "+jobID, res, err)
}

// leased turns the result of an update of a leased job into ErrLeaseLost
// when no row matched.
func (s *sqlStore) leased(op string, res sql.Result, err error) error {
	if err != nil {
		return s.fail(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail(op, err)
	}
	if n == 0 {
		return fmt.Errorf("store: %s: %w", op, ErrLeaseLost)
	}
	return nil
}

// CountJobs counts every job when status is "".
func (s *sqlStore) CountJobs(ctx context.Context, status string) (int, error) {
	q, args := `SELECT COUNT(*) FROM jobs`, []any{}
	if status != "" {
		q += ` WHERE status = ?`
		args = append(args, status)
	}
	var n int
	if err := s.queryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, s.fail("count jobs", err)
	}
	return n, nil
}

// optMicros is the stored form of an optional time: NULL or microseconds.
func optMicros(t *time.Time) any {
	if t == nil {
		return nil
	}
	return toMicros(*t)
}
