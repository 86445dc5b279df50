package service

import (
	"context"
	"errors"

	"github.com/csbs/csbs/internal/store"
)

// CodeJobNotFound is the refusal of a job (operation log) that does not
// exist (404, "task not found").
const CodeJobNotFound = "CSBS.6040"

// jobKindRestore is the kind of restore jobs; it is named here because the
// job list shows restores whether or not this process runs them.
const jobKindRestore = "restore"

// operationTypes are the job kinds a user sees as operation logs; the
// others (garbage collection) are housekeeping.
var operationTypes = []string{JobProtect, JobDelete, jobKindRestore}

// Operation log statuses, as the API shows job statuses.
const (
	OpWaiting = "waiting" // queued
	OpRunning = "running"
	OpSuccess = "success"
	OpError   = "error" // failed: ErrorInfo says why
)

var opStatus = map[string]string{
	store.JobQueued:    OpWaiting,
	store.JobRunning:   OpRunning,
	store.JobSucceeded: OpSuccess,
	store.JobFailed:    OpError,
}

// OperationStatus is the operation log status of a job status.
func OperationStatus(jobStatus string) string {
	if s, ok := opStatus[jobStatus]; ok {
		return s
	}
	return jobStatus
}

// jobStatus is the job status of an operation log status.
func jobStatus(op string) (string, bool) {
	for js, s := range opStatus {
		if s == op {
			return js, true
		}
	}
	return "", false
}

// OperationLogFilter selects operation logs; zero fields do not filter.
type OperationLogFilter struct {
	Status        string // waiting | running | success | error
	OperationType string // protect | restore | delete
	CheckpointID  string
	PlanID        string
	Limit         int // 0 = no limit
	Offset        int
	Marker        string // id of the last log of the previous page
}

// OperationLogs lists the jobs of a project (backups, restores, deletes),
// newest first.
func (s *Service) OperationLogs(ctx context.Context, projectID string, f OperationLogFilter) ([]*store.Job, error) {
	sf := store.JobFilter{Kinds: operationTypes, CheckpointID: f.CheckpointID, PlanID: f.PlanID,
		Limit: f.Limit, Offset: f.Offset, Marker: f.Marker}
	if f.Status != "" {
		js, ok := jobStatus(f.Status)
		if !ok {
			return nil, InvalidParam("status", "%q: want waiting, running, success or error", truncateRunes(f.Status, 20))
		}
		sf.Status = js
	}
	if f.OperationType != "" {
		if !isOperationType(f.OperationType) {
			return nil, InvalidParam("operation_type", "%q: want protect, restore or delete", truncateRunes(f.OperationType, 20))
		}
		sf.Kinds = []string{f.OperationType}
	}
	jobs, err := s.store.ListJobs(ctx, projectID, sf)
	if errors.Is(err, store.ErrBadMarker) {
		return nil, InvalidParam("marker", "no operation log %s to continue after", truncateRunes(f.Marker, 70))
	}
	return jobs, err
}

func isOperationType(kind string) bool {
	for _, k := range operationTypes {
		if k == kind {
			return true
		}
	}
	return false
}

// OperationLog returns one job of the project: CSBS.6040 (404) when there
// is none, or it is housekeeping.
func (s *Service) OperationLog(ctx context.Context, projectID, id string) (*store.Job, error) {
	j, err := s.store.GetProjectJob(ctx, projectID, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && !isOperationType(j.Kind) {
		return nil, jobNotFound(id)
	}
	return j, err
}

func jobNotFound(id string) *Error {
	return &Error{Code: CodeJobNotFound, Status: 404, Msg: "task not found: no operation log " + truncateRunes(id, 70) + " in this project"}
}

// DeleteOperationLog removes a failed job from the list ("Delete" of the
// user guide). Jobs that have not failed stay: CSBS.9001 (400).
func (s *Service) DeleteOperationLog(ctx context.Context, projectID, id string) error {
	if _, err := s.OperationLog(ctx, projectID, id); err != nil {
		return err
	}
	err := s.store.DeleteFailedJob(ctx, projectID, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return jobNotFound(id)
	case errors.Is(err, store.ErrJobNotFailed):
		return InvalidParam("operation_log", "%s has not failed; only failed operation logs can be deleted", id)
	}
	return err
}

// DeleteFailedOperationLogs removes every failed job of the project from
// the list ("Delete All") and returns how many it removed.
func (s *Service) DeleteFailedOperationLogs(ctx context.Context, projectID string) (int, error) {
	return s.store.DeleteFailedJobs(ctx, projectID, operationTypes)
}

// RecordFailedJob adds a job that failed before it could start — a
// scheduled backup refused by a quota, say — so that the user finds it in
// the job list with its reason. j needs Kind, ProjectID and whatever ids
// it concerns (PlanID, CheckpointID); the rest is filled in.
func (s *Service) RecordFailedJob(ctx context.Context, j *store.Job, reason error) error {
	now := s.clock()
	if j.ID == "" {
		j.ID = newID()
	}
	j.Status, j.Error = store.JobFailed, reason.Error()
	j.CreatedAt, j.StartedAt, j.FinishedAt = now, &now, &now
	return s.store.InsertJob(context.WithoutCancel(ctx), j)
}
