package api

import (
	"net/http"
	"net/url"

	"github.com/csbs/csbs/internal/auth"
	"github.com/csbs/csbs/internal/service"
)

// Kept clones (extension, an administrator's): GET …/kept_clones lists the
// clones the local compute driver keeps on the disks of the node that
// answers, with what they cost; DELETE …/kept_clones drops them (the next
// backup of each disk reads it whole). server_id and volume_id select;
// all_tenants=true covers every project and clones of no known project.

type wireKeptClone struct {
	ServerID       string `json:"server_id"`
	ServerName     string `json:"server_name"`
	ProjectID      string `json:"project_id"`
	VolumeID       string `json:"volume_id"`
	VolumeName     string `json:"volume_name"`
	BackupID       string `json:"backup_id"`
	Path           string `json:"path"`
	Source         string `json:"source"`
	KeptAt         string `json:"kept_at"`
	ApparentBytes  int64  `json:"apparent_bytes"`
	ExclusiveBytes int64  `json:"exclusive_bytes"`
}

// maxKeptID bounds the server_id and volume_id a request selects by.
const maxKeptID = 255

// adminOnly refuses (403) a request without the admin role when the
// server authenticates; what names the operation for the message.
func (s *Server) adminOnly(r *http.Request, what string) error {
	if s.ident == nil {
		return nil
	}
	if p := auth.FromContext(r.Context()); p == nil || !p.Admin() {
		return &service.Error{Code: codeForbidden, Status: http.StatusForbidden, Msg: what + " needs the admin role"}
	}
	return nil
}

// keptFilter reads the selection of a kept-clones request.
func keptFilter(r *http.Request) (service.KeptFilter, error) {
	project, err := scope(r)
	if err != nil {
		return service.KeptFilter{}, err
	}
	f := service.KeptFilter{ProjectID: project}
	q := r.URL.Query()
	for _, p := range []struct {
		name string
		to   *string
	}{{"server_id", &f.ServerID}, {"volume_id", &f.VolumeID}} {
		if err := keptID(q, p.name, p.to); err != nil {
			return f, err
		}
	}
	return f, nil
}

func keptID(q url.Values, name string, to *string) error {
	v, ok := q[name]
	if !ok {
		return nil
	}
	if len(v) != 1 || v[0] == "" || len(v[0]) > maxKeptID {
		return service.InvalidParam(name, "give it once, 1 to %d characters", maxKeptID)
	}
	*to = v[0]
	return nil
}

// listKeptClones serves GET /v1/{project_id}/kept_clones.
func (s *Server) listKeptClones(w http.ResponseWriter, r *http.Request) error {
	if err := s.adminOnly(r, "listing kept clones"); err != nil {
		return err
	}
	f, err := keptFilter(r)
	if err != nil {
		return err
	}
	cs, err := s.svc.KeptClones(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.keptToWire(cs))
}

// dropKeptClones serves DELETE /v1/{project_id}/kept_clones: it answers
// with the clones it dropped, as measured before (exclusive_bytes is what
// was freed).
func (s *Server) dropKeptClones(w http.ResponseWriter, r *http.Request) error {
	if err := s.adminOnly(r, "dropping kept clones"); err != nil {
		return err
	}
	f, err := keptFilter(r)
	if err != nil {
		return err
	}
	cs, err := s.svc.DropKeptClones(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.keptToWire(cs))
}

func (s *Server) keptToWire(cs []service.KeptClone) map[string]any {
	out := make([]wireKeptClone, 0, len(cs))
	var apparent, exclusive int64
	for _, c := range cs {
		out = append(out, wireKeptClone{ServerID: c.ServerID, ServerName: c.ServerName, ProjectID: c.ProjectID,
			VolumeID: c.VolumeID, VolumeName: c.VolumeName, BackupID: c.BackupID, Path: c.Path, Source: c.Source,
			KeptAt: formatTime(c.KeptAt), ApparentBytes: c.ApparentBytes, ExclusiveBytes: c.ExclusiveBytes})
		apparent += c.ApparentBytes
		exclusive += c.ExclusiveBytes
	}
	return map[string]any{"kept_clones": out, "node": s.svc.Node(), "count": len(out),
		"apparent_bytes": apparent, "exclusive_bytes": exclusive}
}
