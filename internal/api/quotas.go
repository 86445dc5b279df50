package api

import "net/http"

type wireQuota struct {
	Type  string `json:"type"`
	Unit  string `json:"unit,omitempty"`
	Quota int    `json:"quota"`
	Used  int64  `json:"used"`
}

// quotas serves GET /v1/{project_id}/quotas.
func (s *Server) quotas(w http.ResponseWriter, r *http.Request) error {
	qs, err := s.svc.Quotas(r.Context(), r.PathValue("project_id"))
	if err != nil {
		return err
	}
	out := make([]wireQuota, len(qs))
	for i, q := range qs {
		out[i] = wireQuota{Type: q.Type, Unit: q.Unit, Quota: q.Quota, Used: q.Used}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"quotas": map[string]any{"resources": out}})
}
