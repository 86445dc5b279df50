package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// wireTag is a tag as requests carry it; pointers tell a missing field
// from an empty one.
type wireTag struct {
	Key   *string `json:"key"`
	Value *string `json:"value"`
}

func tagsFromWire(field string, in *[]wireTag) ([]store.Tag, error) {
	if in == nil {
		return nil, nil
	}
	out := make([]store.Tag, 0, len(*in))
	for i, t := range *in {
		if t.Key == nil {
			return nil, service.InvalidParam(field, "tag %d has no key", i+1)
		}
		if t.Value == nil {
			return nil, service.InvalidParam(field, "tag %q has no value (an empty string is allowed)", *t.Key)
		}
		out = append(out, store.Tag{Key: *t.Key, Value: *t.Value})
	}
	return out, nil
}

// protectBody is the body of "Creating a Backup for a Resource".
type protectBody struct {
	Protect *struct {
		BackupName   *string         `json:"backup_name"`
		Description  *string         `json:"description"`
		Incremental  *bool           `json:"incremental"`
		ResourceType *string         `json:"resource_type"`
		Tags         *[]wireTag      `json:"tags"`
		ExtraInfo    json.RawMessage `json:"extra_info"`
	} `json:"protect"`
}

// protectRequest turns a protect body into a service request, refusing
// what the JSON types alone cannot.
func (b protectBody) request() (service.ProtectRequest, error) {
	var req service.ProtectRequest
	p := b.Protect
	if p == nil {
		return req, service.InvalidParam("protect", "missing; the body must be {\"protect\": {...}}")
	}
	if p.BackupName != nil {
		if *p.BackupName == "" {
			return req, service.InvalidParam("backup_name", "must not be empty when given")
		}
		req.BackupName = *p.BackupName
	}
	if p.Description != nil {
		req.Description = *p.Description
	}
	req.Incremental = p.Incremental
	if p.ResourceType != nil {
		if *p.ResourceType == "" {
			return req, service.InvalidParam("resource_type", "must not be empty when given")
		}
		req.ResourceType = *p.ResourceType
	}
	tags, err := tagsFromWire("tags", p.Tags)
	if err != nil {
		return req, err
	}
	req.Tags = tags
	if raw := bytes.TrimSpace(p.ExtraInfo); len(raw) > 0 && string(raw) != "null" {
		if raw[0] != '{' {
			return req, service.InvalidParam("extra_info", "want an object")
		}
		req.ExtraInfo = raw
	}
	return req, nil
}

// resourceAction serves POST …/resources/{resource_id}/action: protect.
func (s *Server) resourceAction(w http.ResponseWriter, r *http.Request) error {
	var body protectBody
	if err := decode(r, &body); err != nil {
		return err
	}
	req, err := body.request()
	if err != nil {
		return err
	}
	cp, err := s.svc.Protect(r.Context(), r.PathValue("project_id"), r.PathValue("resource_id"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"checkpoint": checkpointToWire(cp)})
}

// resourcesBody is the body of POST …/resources/action.
type resourcesBody struct {
	CheckProtectable *[]struct {
		ResourceID   *string `json:"resource_id"`
		ResourceType *string `json:"resource_type"`
	} `json:"check_protectable"`
	CheckRestorable *json.RawMessage `json:"check_restorable"`
}

// resourcesAction serves POST …/resources/action: check_protectable.
func (s *Server) resourcesAction(w http.ResponseWriter, r *http.Request) error {
	var body resourcesBody
	if err := decode(r, &body); err != nil {
		return err
	}
	switch {
	case body.CheckProtectable != nil:
		checks := make([]service.ProtectableCheck, 0, len(*body.CheckProtectable))
		for i, c := range *body.CheckProtectable {
			if c.ResourceID == nil || *c.ResourceID == "" {
				return service.InvalidParam("check_protectable.resource_id", "missing in entry %d", i+1)
			}
			if c.ResourceType == nil || *c.ResourceType == "" {
				return service.InvalidParam("check_protectable.resource_type", "missing in entry %d", i+1)
			}
			checks = append(checks, service.ProtectableCheck{ResourceID: *c.ResourceID, ResourceType: *c.ResourceType})
		}
		res, err := s.svc.CheckProtectable(r.Context(), r.PathValue("project_id"), checks)
		if err != nil {
			return err
		}
		out := make([]map[string]any, len(res))
		for i, c := range res {
			m := map[string]any{"resource_id": c.ResourceID, "resource_type": c.ResourceType, "result": c.Result}
			if !c.Result {
				m["error_code"], m["error_msg"] = c.ErrorCode, c.ErrorMsg
			}
			out[i] = m
		}
		return writeJSON(w, http.StatusOK, map[string]any{"protectable": out})
	case body.CheckRestorable != nil:
		return s.checkRestorable(w, r, *body.CheckRestorable)
	}
	return service.InvalidParam("body", "want check_protectable or check_restorable")
}

func (s *Server) getItem(w http.ResponseWriter, r *http.Request) error {
	return s.cachedJSON(w, r, func() (any, error) {
		it, err := s.svc.Item(r.Context(), r.PathValue("project_id"), r.PathValue("checkpoint_item_id"))
		if err != nil {
			return nil, err
		}
		return map[string]any{"checkpoint_item": itemToWire(it)}, nil
	})
}

func (s *Server) listItems(w http.ResponseWriter, r *http.Request) error {
	f, err := itemFilter(r.URL.Query(), false)
	if err != nil {
		return err
	}
	return s.cachedJSON(w, r, func() (any, error) {
		limit := f.Limit
		f.Limit = limit + 1 // one more tells whether there is a next page
		items, err := s.svc.Items(r.Context(), r.PathValue("project_id"), f)
		if err != nil {
			return nil, err
		}
		return listPage(r, s.baseURL(r), "checkpoint_items", items, limit, func(it *store.Item) string { return it.ID }, itemToWire), nil
	})
}

func (s *Server) countItems(w http.ResponseWriter, r *http.Request) error {
	f, err := itemFilter(r.URL.Query(), true)
	if err != nil {
		return err
	}
	return s.cachedJSON(w, r, func() (any, error) {
		n, err := s.svc.CountItems(r.Context(), r.PathValue("project_id"), f)
		if err != nil {
			return nil, err
		}
		return map[string]int{"count": n}, nil
	})
}

func (s *Server) deleteCheckpoint(w http.ResponseWriter, r *http.Request) error {
	var ids []string
	for _, v := range r.URL.Query()["checkpoint_items"] {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				ids = append(ids, id)
			}
		}
	}
	if err := s.svc.DeleteCheckpoint(r.Context(), r.PathValue("project_id"), r.PathValue("checkpoint_id"), ids); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// volumeData is the extension GET …/checkpoint_items/{id}/volumes/{volume_id}/data:
// the bytes of a disk of a backup, with Range requests (206), for csbs
// mount and csbs export through the API. HEAD gives the size.
func (s *Server) volumeData(w http.ResponseWriter, r *http.Request) error {
	d, err := s.svc.VolumeData(r.Context(), r.PathValue("project_id"), r.PathValue("checkpoint_item_id"), r.PathValue("volume_id"))
	if err != nil {
		return err
	}
	defer d.Release()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(d, 0, d.Size))
	return nil
}
