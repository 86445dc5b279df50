package api

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// Verification of backups (extension): POST …/verifications verifies now
// (an administrator's operation: it reads the repository), GET lists the
// last verification of the project's backups, the damaged ones with
// damaged=true. all_tenants=true (admin) covers every project.

type wireVerification struct {
	CheckpointItemID string              `json:"checkpoint_item_id"`
	ProjectID        string              `json:"project_id"`
	VerifiedAt       string              `json:"verified_at"`
	Damaged          bool                `json:"damaged"`
	DamageReason     string              `json:"damage_reason"`
	DamagedVolumes   []wireDamagedVolume `json:"damaged_volumes"`
}

type wireDamagedVolume struct {
	VolumeID  string  `json:"volume_id"`
	ChunkSize int     `json:"chunk_size"`
	Offsets   []int64 `json:"offsets"`
}

func verificationToWire(v *store.Verification) wireVerification {
	out := wireVerification{CheckpointItemID: v.ItemID, ProjectID: v.ProjectID, VerifiedAt: formatTime(v.VerifiedAt),
		Damaged: v.Damaged, DamageReason: v.Reason, DamagedVolumes: damagedToWire(v.Damage)}
	return out
}

func damagedToWire(ds []store.DamagedVolume) []wireDamagedVolume {
	out := make([]wireDamagedVolume, 0, len(ds))
	for _, d := range ds {
		out = append(out, wireDamagedVolume{VolumeID: d.VolumeID, ChunkSize: d.ChunkSize, Offsets: d.Offsets})
	}
	return out
}

// verifyBody is the body of POST …/verifications; it may be empty.
type verifyBody struct {
	Verification *struct {
		CheckpointItemIDs *[]string `json:"checkpoint_item_ids"`
		MaxAge            *string   `json:"max_age"`
	} `json:"verification"`
}

// maxVerifyItems bounds the backups one request names.
const maxVerifyItems = 1000

// scope returns the project a verification request covers: the URL's, or
// every project ("") with all_tenants=true.
func scope(r *http.Request) (string, error) {
	all := false
	if v := r.URL.Query()["all_tenants"]; len(v) > 0 {
		b, err := strconv.ParseBool(v[0])
		if err != nil {
			return "", service.InvalidParam("all_tenants", "%q is not true or false", v[0])
		}
		all = b
	}
	if all {
		return "", nil
	}
	return r.PathValue("project_id"), nil
}

// verify serves POST /v1/{project_id}/verifications: it verifies the
// backups named (or every backup not verified within max_age, every one
// without it) and answers when done, with what it found. With
// authentication on, only an administrator may: the run reads the
// repository.
func (s *Server) verify(w http.ResponseWriter, r *http.Request) error {
	if err := s.adminOnly(r, "verifying backups"); err != nil {
		return err
	}
	project, err := scope(r)
	if err != nil {
		return err
	}
	var body verifyBody
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return service.InvalidParam("body", "could not be read (at most %d bytes): %v", maxBody, err)
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := decodeBytes(raw, &body); err != nil {
			return err
		}
	}
	req := service.VerifyRequest{ProjectID: project}
	if v := body.Verification; v != nil {
		if v.CheckpointItemIDs != nil {
			ids := *v.CheckpointItemIDs
			if len(ids) > maxVerifyItems {
				return service.InvalidParam("checkpoint_item_ids", "%d ids; at most %d", len(ids), maxVerifyItems)
			}
			for i, id := range ids {
				if id == "" || len(id) > 64 {
					return service.InvalidParam("checkpoint_item_ids", "entry %d is empty or longer than 64 characters", i+1)
				}
			}
			if len(ids) > 0 && project == "" {
				return service.InvalidParam("checkpoint_item_ids", "name backups of the URL's project, not with all_tenants=true")
			}
			req.ItemIDs = ids
		}
		if v.MaxAge != nil {
			d, err := time.ParseDuration(*v.MaxAge)
			if err != nil || d < 0 {
				return service.InvalidParam("max_age", "%q is not a duration such as \"24h\"", *v.MaxAge)
			}
			req.MaxAge = d
		}
	}
	run, err := s.svc.VerifyBackups(r.Context(), req)
	if err != nil {
		return err
	}
	results := make([]wireVerification, 0, len(run.Results))
	for _, v := range run.Results {
		results = append(results, verificationToWire(v))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"verification": map[string]any{
		"started_at": formatTime(run.At), "seconds": run.Duration.Seconds(),
		"verified": run.Backups, "damaged": run.Damaged, "bytes": run.Bytes,
		"quarantined": run.Quarantined, "results": results,
	}})
}

// listVerifications serves GET /v1/{project_id}/verifications[?damaged=true]:
// the last verification of each backup, newest backup first.
func (s *Server) listVerifications(w http.ResponseWriter, r *http.Request) error {
	project, err := scope(r)
	if err != nil {
		return err
	}
	damagedOnly := false
	if v := r.URL.Query()["damaged"]; len(v) > 0 {
		if damagedOnly, err = strconv.ParseBool(v[0]); err != nil {
			return service.InvalidParam("damaged", "%q is not true or false", v[0])
		}
	}
	vs, err := s.svc.Verifications(r.Context(), project, damagedOnly)
	if err != nil {
		return err
	}
	out := make([]wireVerification, 0, len(vs))
	for _, v := range vs {
		out = append(out, verificationToWire(v))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"verifications": out})
}
