package api

import (
	"net/http"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// wireOperationLog is a job as OpenStack Karbor showed operation logs,
// with the backup id (checkpoint_item_id) and created_at added.
type wireOperationLog struct {
	ID               string   `json:"id"`
	ProjectID        string   `json:"project_id"`
	OperationType    string   `json:"operation_type"`
	Status           string   `json:"status"`
	CheckpointID     string   `json:"checkpoint_id"`
	CheckpointItemID string   `json:"checkpoint_item_id"`
	PlanID           string   `json:"plan_id"`
	ProviderID       string   `json:"provider_id"`
	RestoreID        string   `json:"restore_id"`
	CreatedAt        string   `json:"created_at"`
	StartedAt        *string  `json:"started_at"`
	EndedAt          *string  `json:"ended_at"`
	ErrorInfo        *string  `json:"error_info"`
	ExtraInfo        struct{} `json:"extra_info"`
}

func operationLogToWire(j *store.Job) wireOperationLog {
	o := wireOperationLog{
		ID: j.ID, ProjectID: j.ProjectID, OperationType: j.Kind, Status: service.OperationStatus(j.Status),
		CheckpointID: j.CheckpointID, CheckpointItemID: j.ItemID, PlanID: j.PlanID,
		ProviderID: service.ProviderID, RestoreID: j.RestoreID, CreatedAt: formatTime(j.CreatedAt),
	}
	if j.StartedAt != nil {
		t := formatTime(*j.StartedAt)
		o.StartedAt = &t
	}
	if j.FinishedAt != nil {
		t := formatTime(*j.FinishedAt)
		o.EndedAt = &t
	}
	if j.Status == store.JobFailed {
		e := j.Error
		o.ErrorInfo = &e
	}
	return o
}

// listOperationLogs serves GET /v1/{project_id}/operation_logs: filters
// status, operation_type, checkpoint_id, plan_id; paging by limit, marker
// and offset, with operation_logs_links when there is a next page.
func (s *Server) listOperationLogs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := service.OperationLogFilter{
		Status: q.Get("status"), OperationType: q.Get("operation_type"),
		CheckpointID: q.Get("checkpoint_id"), PlanID: q.Get("plan_id"),
	}
	pg, err := parsePaging(q)
	if err != nil {
		return err
	}
	f.Limit, f.Offset, f.Marker = pg.limit+1, pg.offset, pg.marker // one more: is there a next page?
	jobs, err := s.svc.OperationLogs(r.Context(), r.PathValue("project_id"), f)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listPage(r, s.baseURL(r), "operation_logs", jobs, pg.limit, func(j *store.Job) string { return j.ID }, operationLogToWire))
}

func (s *Server) getOperationLog(w http.ResponseWriter, r *http.Request) error {
	j, err := s.svc.OperationLog(r.Context(), r.PathValue("project_id"), r.PathValue("operation_log_id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"operation_log": operationLogToWire(j)})
}

// deleteOperationLog removes one failed job ("Delete" in the user guide).
func (s *Server) deleteOperationLog(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.DeleteOperationLog(r.Context(), r.PathValue("project_id"), r.PathValue("operation_log_id")); err != nil {
		return err
	}
	return noContent(w)
}

// deleteOperationLogs removes every failed job ("Delete All"); the query
// must say status=error, so that a bare DELETE never empties the list by
// accident.
func (s *Server) deleteOperationLogs(w http.ResponseWriter, r *http.Request) error {
	if st := r.URL.Query().Get("status"); st != service.OpError {
		return service.InvalidParam("status", "want status=error: only failed operation logs can be deleted, got %q", truncate(st, 20))
	}
	if _, err := s.svc.DeleteFailedOperationLogs(r.Context(), r.PathValue("project_id")); err != nil {
		return err
	}
	return noContent(w)
}
