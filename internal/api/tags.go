package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// tagRoutes registers the six tag operations of a resource kind
// (csbs_backup or csbs_backup_policy).
func (s *Server) tagRoutes(p, kind string) {
	base := p + "/" + kind
	s.handle("GET "+base+"/tags", s.projectTags(kind))
	s.handle("POST "+base+"/resource_instances/action", s.queryTagged(kind))
	s.handle("GET "+base+"/{resource_id}/tags", s.resourceTags(kind))
	s.handle("POST "+base+"/{resource_id}/tags", s.addTag(kind))
	s.handle("POST "+base+"/{resource_id}/tags/action", s.tagsAction(kind))
	s.handle("DELETE "+base+"/{resource_id}/tags/{key}", s.deleteTag(kind))
}

// noContent answers 204, as the tag changes of the reference do.
func noContent(w http.ResponseWriter) error {
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// addTagBody is the body of "Adding a Tag to a Backup Resource".
type addTagBody struct {
	Tag *wireTag `json:"tag"`
}

func (s *Server) addTag(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body addTagBody
		if err := decode(r, &body); err != nil {
			return err
		}
		if body.Tag == nil {
			return service.InvalidParam("tag", "missing; the body must be {\"tag\": {\"key\": …, \"value\": …}}")
		}
		tags, err := tagsFromWire("tag", &[]wireTag{*body.Tag})
		if err != nil {
			return err
		}
		if err := s.svc.AddTag(r.Context(), kind, r.PathValue("project_id"), r.PathValue("resource_id"), tags[0]); err != nil {
			return err
		}
		return noContent(w)
	}
}

// tagsActionBody is the body of "Batch Adding or Removing Tags".
type tagsActionBody struct {
	Action *string    `json:"action"`
	Tags   *[]wireTag `json:"tags"`
}

func (s *Server) tagsAction(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body tagsActionBody
		if err := decode(r, &body); err != nil {
			return err
		}
		if body.Tags == nil {
			return service.InvalidParam("tags", "missing; a list of tags is required")
		}
		ctx, project, id := r.Context(), r.PathValue("project_id"), r.PathValue("resource_id")
		var err error
		switch {
		case body.Action == nil:
			return service.InvalidParam("action", "missing; want create or delete")
		case *body.Action == "create":
			var tags []store.Tag
			if tags, err = tagsFromWire("tags", body.Tags); err != nil {
				return err
			}
			if tags == nil {
				tags = []store.Tag{}
			}
			err = s.svc.CreateTags(ctx, kind, project, id, tags)
		case *body.Action == "delete":
			dels := make([]service.TagDelete, len(*body.Tags))
			for i, t := range *body.Tags {
				if t.Key == nil {
					return service.InvalidParam("tags", "tag %d has no key", i+1)
				}
				dels[i] = service.TagDelete{Key: *t.Key, Value: t.Value}
			}
			err = s.svc.DeleteTags(ctx, kind, project, id, dels)
		default:
			return service.InvalidParam("action", "%q: want create or delete", truncate(*body.Action, 20))
		}
		if err != nil {
			return err
		}
		return noContent(w)
	}
}

func (s *Server) deleteTag(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.svc.DeleteTag(r.Context(), kind, r.PathValue("project_id"), r.PathValue("resource_id"), r.PathValue("key")); err != nil {
			return err
		}
		return noContent(w)
	}
}

func (s *Server) resourceTags(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		tags, err := s.svc.ResourceTags(r.Context(), kind, r.PathValue("project_id"), r.PathValue("resource_id"))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]any{"tags": tags})
	}
}

type wireKeyValues struct {
	Key    string   `json:"key"`
	Values []string `json:"values"`
}

func (s *Server) projectTags(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		kvs, err := s.svc.ProjectTags(r.Context(), kind, r.PathValue("project_id"))
		if err != nil {
			return err
		}
		out := make([]wireKeyValues, len(kvs))
		for i, kv := range kvs {
			out[i] = wireKeyValues{Key: kv.Key, Values: kv.Values}
		}
		return writeJSON(w, http.StatusOK, map[string]any{"tags": out})
	}
}

// wireCondition is an entry of tags, tags_any, not_tags and not_tags_any.
type wireCondition struct {
	Key    *string   `json:"key"`
	Values *[]string `json:"values"`
}

type wireMatch struct {
	Key   *string `json:"key"`
	Value *string `json:"value"`
}

// queryBody is the body of "Querying Backup Resources by Tag". limit and
// offset are strings in the reference; numbers are accepted too.
type queryBody struct {
	Action     *string          `json:"action"`
	Tags       *[]wireCondition `json:"tags"`
	TagsAny    *[]wireCondition `json:"tags_any"`
	NotTags    *[]wireCondition `json:"not_tags"`
	NotTagsAny *[]wireCondition `json:"not_tags_any"`
	Matches    *[]wireMatch     `json:"matches"`
	Limit      json.RawMessage  `json:"limit"`
	Offset     json.RawMessage  `json:"offset"`
}

func conditionsFromWire(field string, in *[]wireCondition) ([]service.TagCondition, error) {
	if in == nil {
		return nil, nil
	}
	out := make([]service.TagCondition, len(*in))
	for i, c := range *in {
		if c.Key == nil {
			return nil, service.InvalidParam(field, "entry %d has no key", i+1)
		}
		if c.Values == nil {
			return nil, service.InvalidParam(field, "entry %d (key %q) has no values; an empty list means any value", i+1, truncate(*c.Key, 40))
		}
		out[i] = service.TagCondition{Key: *c.Key, Values: *c.Values}
	}
	return out, nil
}

// wholeNumber reads a JSON string or number holding a whole number; absent
// or null is def.
func wholeNumber(field string, raw json.RawMessage, def int) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return def, nil
	}
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, service.InvalidParam(field, "malformed string")
		}
		s = strings.TrimSpace(s)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, service.InvalidParam(field, "want a whole number, got %s", truncate(string(raw), 30))
	}
	return n, nil
}

// request turns a query body into a service request.
func (b queryBody) request() (service.TagQuery, error) {
	var q service.TagQuery
	if b.Action != nil {
		q.Action = *b.Action
	}
	var err error
	for _, c := range []struct {
		field string
		in    *[]wireCondition
		out   *[]service.TagCondition
	}{{"tags", b.Tags, &q.Tags}, {"tags_any", b.TagsAny, &q.TagsAny}, {"not_tags", b.NotTags, &q.NotTags}, {"not_tags_any", b.NotTagsAny, &q.NotTagsAny}} {
		if *c.out, err = conditionsFromWire(c.field, c.in); err != nil {
			return q, err
		}
	}
	if b.Matches != nil {
		q.Matches = make([]service.TagMatch, len(*b.Matches))
		for i, m := range *b.Matches {
			if m.Key == nil || m.Value == nil {
				return q, service.InvalidParam("matches", "entry %d needs a key and a value", i+1)
			}
			q.Matches[i] = service.TagMatch{Key: *m.Key, Value: *m.Value}
		}
	}
	if q.Action == "filter" {
		if q.Limit, err = wholeNumber("limit", b.Limit, 1000); err != nil {
			return q, err
		}
		if q.Limit == 0 {
			return q, service.InvalidParam("limit", "0 is out of range; want 1 to 1000")
		}
		if q.Offset, err = wholeNumber("offset", b.Offset, 0); err != nil {
			return q, err
		}
	}
	return q, nil
}

type wireTagged struct {
	ResourceID     string      `json:"resource_id"`
	ResourceName   string      `json:"resource_name"`
	ResourceDetail any         `json:"resource_detail"`
	Tags           []store.Tag `json:"tags"`
}

func (s *Server) queryTagged(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body queryBody
		if err := decode(r, &body); err != nil {
			return err
		}
		q, err := body.request()
		if err != nil {
			return err
		}
		res, err := s.svc.QueryTagged(r.Context(), kind, r.PathValue("project_id"), q)
		if err != nil {
			return err
		}
		if q.Action == "count" {
			return writeJSON(w, http.StatusOK, map[string]int{"total_count": res.TotalCount})
		}
		out := make([]wireTagged, len(res.Resources))
		for i, v := range res.Resources {
			var detail any = struct{}{}
			if v.Item != nil {
				detail = itemToWire(v.Item)
			}
			out[i] = wireTagged{ResourceID: v.ID, ResourceName: v.Name, ResourceDetail: detail, Tags: v.Tags}
		}
		return writeJSON(w, http.StatusOK, map[string]any{"resources": out, "total_count": res.TotalCount})
	}
}
