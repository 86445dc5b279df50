package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ErrJobNotFailed means a job asked to be deleted has not failed: only
// failed jobs can be removed from the job list.
var ErrJobNotFailed = errors.New("job has not failed")

// JobFilter selects the jobs of a project for ListJobs. Zero fields do not
// filter. Jobs are listed newest first.
type JobFilter struct {
	Kinds        []string // job kinds to include; empty = every kind
	Status       string   // JobQueued, JobRunning, JobSucceeded or JobFailed
	CheckpointID string
	PlanID       string

	Limit  int    // 0 = no limit
	Offset int    // rows to skip after the marker
	Marker string // id of the last job of the previous page
}

// jobWhere returns the condition selecting the jobs of f, paging aside.
func jobWhere(projectID string, f JobFilter) (string, []any) {
	conds := []string{"project_id = ?"}
	args := []any{projectID}
	if len(f.Kinds) > 0 {
		conds = append(conds, "kind IN ("+marks(len(f.Kinds))+")")
		for _, k := range f.Kinds {
			args = append(args, k)
		}
	}
	for _, e := range []struct{ col, v string }{{"status", f.Status}, {"checkpoint_id", f.CheckpointID}, {"plan_id", f.PlanID}} {
		if e.v != "" {
			conds = append(conds, e.col+" = ?")
			args = append(args, e.v)
		}
	}
	return strings.Join(conds, " AND "), args
}

// ListJobs pages by keyset on (created_at, id), newest first. A marker
// that names no job of the project (never did, or was deleted since) is
// ErrBadMarker.
func (s *queries) ListJobs(ctx context.Context, projectID string, f JobFilter) ([]*Job, error) {
	where, args := jobWhere(projectID, f)
	if f.Marker != "" {
		var at int64
		err := s.queryRow(ctx, `SELECT created_at FROM jobs WHERE project_id = ? AND id = ?`, projectID, f.Marker).Scan(&at)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("store: list jobs after marker %q: %w", f.Marker, ErrBadMarker)
		}
		if err != nil {
			return nil, s.fail("look up job marker "+f.Marker, err)
		}
		where += " AND (created_at < ? OR (created_at = ? AND id < ?))"
		args = append(args, at, at, f.Marker)
	}
	q := `SELECT ` + jobColumns + ` FROM jobs WHERE ` + where + ` ORDER BY created_at DESC, id DESC`
	q += s.page(f.Limit, f.Offset)
	return queryAll(ctx, s, "list jobs", scanJob, q, args...)
}

// GetProjectJob returns a job of the project, or ErrNotFound (also for a
// job of another project).
func (s *queries) GetProjectJob(ctx context.Context, projectID, id string) (*Job, error) {
	j, err := scanJob(s.queryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE project_id = ? AND id = ?`, projectID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, s.fail("get job "+id, err)
	}
	return j, nil
}

// DeleteFailedJob removes a failed job of the project: ErrNotFound when
// there is none with that id, ErrJobNotFailed when it has not failed.
func (s *queries) DeleteFailedJob(ctx context.Context, projectID, id string) error {
	res, err := s.exec(ctx, `DELETE FROM jobs WHERE project_id = ? AND id = ? AND status = ?`, projectID, id, JobFailed)
	if err != nil {
		return s.fail("delete job "+id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail("delete job "+id, err)
	}
	if n > 0 {
		return nil
	}
	if _, err := s.GetProjectJob(ctx, projectID, id); err != nil {
		return err
	}
	return fmt.Errorf("store: delete job %s: %w", id, ErrJobNotFailed)
}

// DeleteFailedJobs removes the failed jobs of the project whose kind is
// one of kinds (every kind when empty) and reports how many it removed.
func (s *queries) DeleteFailedJobs(ctx context.Context, projectID string, kinds []string) (int, error) {
	where, args := jobWhere(projectID, JobFilter{Kinds: kinds, Status: JobFailed})
	res, err := s.exec(ctx, `DELETE FROM jobs WHERE `+where, args...)
	if err != nil {
		return 0, s.fail("delete failed jobs", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, s.fail("delete failed jobs", err)
	}
	return int(n), nil
}
