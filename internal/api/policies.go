package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// policyRoutes registers the backup policy operations and "Executing a
// Backup Policy".
func (s *Server) policyRoutes(p string) {
	s.handle("POST "+p+"/policies", s.createPolicy)
	s.handle("GET "+p+"/policies", s.listPolicies)
	s.handle("GET "+p+"/policies/{policy_id}", s.getPolicy)
	s.handle("PUT "+p+"/policies/{policy_id}", s.updatePolicy)
	s.handle("DELETE "+p+"/policies/{policy_id}", s.deletePolicy)
	s.handle("POST "+p+"/providers/{provider_id}/checkpoints", s.executePolicy)
}

// flexInt is an integer field that clients send as a JSON number or as a
// string of digits (the reference's responses show "20").
type flexInt int

func (n *flexInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if uq, err := strconv.Unquote(s); err == nil {
		s = strings.TrimSpace(uq)
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: "non-integer " + clipJSON(b), Type: reflect.TypeFor[int]()}
	}
	*n = flexInt(v)
	return nil
}

// flexBool is a boolean field sent as true/false or "true"/"false"
// (the reference's responses show "False").
type flexBool bool

func (f *flexBool) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	v, err := strconv.ParseBool(strings.ToLower(s))
	if err != nil {
		return &json.UnmarshalTypeError{Value: clipJSON(b), Type: reflect.TypeFor[bool]()}
	}
	*f = flexBool(v)
	return nil
}

func clipJSON(b []byte) string { return truncate(string(b), 30) }

func intPtr(n *flexInt) *int {
	if n == nil {
		return nil
	}
	v := int(*n)
	return &v
}

// policyBody is the body of create and update.
type policyBody struct {
	Policy *struct {
		Name                *string             `json:"name"`
		Description         *string             `json:"description"`
		ProviderID          *string             `json:"provider_id"`
		Parameters          json.RawMessage     `json:"parameters"`
		Resources           *[]wireResourceReq  `json:"resources"`
		ScheduledOperations *[]wireOperationReq `json:"scheduled_operations"`
		Tags                *[]wireTag          `json:"tags"`
	} `json:"policy"`
}

type wireResourceReq struct {
	ID        *string         `json:"id"`
	Type      *string         `json:"type"`
	Name      *string         `json:"name"`
	ExtraInfo json.RawMessage `json:"extra_info"`
}

type wireOperationReq struct {
	ID                  *string `json:"id"`
	Name                *string `json:"name"`
	Description         *string `json:"description"`
	Enabled             *bool   `json:"enabled"`
	OperationType       *string `json:"operation_type"`
	OperationDefinition *struct {
		MaxBackups            *flexInt  `json:"max_backups"`
		RetentionDurationDays *flexInt  `json:"retention_duration_days"`
		Permanent             *flexBool `json:"permanent"`
		PlanID                *string   `json:"plan_id"`
		ProviderID            *string   `json:"provider_id"`
		DayBackups            *flexInt  `json:"day_backups"`
		WeekBackups           *flexInt  `json:"week_backups"`
		MonthBackups          *flexInt  `json:"month_backups"`
		YearBackups           *flexInt  `json:"year_backups"`
		Timezone              *string   `json:"timezone"`
	} `json:"operation_definition"`
	Trigger *struct {
		Properties *struct {
			Pattern *string `json:"pattern"`
		} `json:"properties"`
	} `json:"trigger"`
}

// request turns a policy body into a service request, refusing what the
// JSON types alone cannot.
func (b policyBody) request() (service.PolicyRequest, error) {
	var req service.PolicyRequest
	p := b.Policy
	if p == nil {
		return req, service.InvalidParam("policy", "missing; the body must be {\"policy\": {...}}")
	}
	req.Name, req.Description, req.ProviderID = p.Name, p.Description, p.ProviderID
	if raw := bytes.TrimSpace(p.Parameters); len(raw) > 0 && string(raw) != "null" {
		if raw[0] != '{' {
			return req, service.InvalidParam("parameters", "want an object such as {\"common\": {}}")
		}
		req.Parameters = raw
	}
	if p.Resources != nil {
		res := make([]store.Resource, 0, len(*p.Resources))
		for i, r := range *p.Resources {
			if r.ID == nil || *r.ID == "" {
				return req, service.InvalidParam("resources", "entry %d has no id", i+1)
			}
			if r.Type == nil {
				return req, service.InvalidParam("resources", "entry %d has no type; it is %s", i+1, service.ResourceTypeServer)
			}
			sr := store.Resource{ID: *r.ID, Type: *r.Type}
			if r.Name != nil {
				sr.Name = *r.Name
			}
			if raw := bytes.TrimSpace(r.ExtraInfo); len(raw) > 0 && string(raw) != "null" {
				if raw[0] != '{' {
					return req, service.InvalidParam("resources.extra_info", "want an object")
				}
				sr.ExtraInfo = raw
			}
			res = append(res, sr)
		}
		req.Resources = &res
	}
	if p.ScheduledOperations != nil {
		ops := make([]service.OperationRequest, 0, len(*p.ScheduledOperations))
		for i, o := range *p.ScheduledOperations {
			op := service.OperationRequest{Name: o.Name, Description: o.Description, Enabled: o.Enabled, OperationType: o.OperationType}
			if o.ID != nil {
				op.ID = *o.ID
			}
			if d := o.OperationDefinition; d != nil {
				def := &service.DefinitionRequest{}
				def.MaxBackups, def.RetentionDurationDays = intPtr(d.MaxBackups), intPtr(d.RetentionDurationDays)
				def.DayBackups, def.WeekBackups = intPtr(d.DayBackups), intPtr(d.WeekBackups)
				def.MonthBackups, def.YearBackups = intPtr(d.MonthBackups), intPtr(d.YearBackups)
				if d.Permanent != nil {
					v := bool(*d.Permanent)
					def.Permanent = &v
				}
				if d.Timezone != nil {
					def.Timezone = *d.Timezone
				}
				if d.ProviderID != nil {
					def.ProviderID = *d.ProviderID
				}
				op.Definition = def
			}
			if o.Trigger != nil {
				if o.Trigger.Properties == nil || o.Trigger.Properties.Pattern == nil {
					return req, service.InvalidParam("scheduled_operations.trigger.properties.pattern", "missing in entry %d", i+1)
				}
				op.Pattern = o.Trigger.Properties.Pattern
			}
			ops = append(ops, op)
		}
		req.Operations = &ops
	}
	if p.Tags != nil {
		tags, err := tagsFromWire("tags", p.Tags)
		if err != nil {
			return req, err
		}
		req.Tags = &tags
	}
	return req, nil
}

// The response shapes of a policy.

type wirePolicy struct {
	CreatedAt           string           `json:"created_at"`
	Description         string           `json:"description"`
	ID                  string           `json:"id"`
	Name                string           `json:"name"`
	Parameters          json.RawMessage  `json:"parameters"`
	ProjectID           string           `json:"project_id"`
	ProviderID          string           `json:"provider_id"`
	Resources           []store.Resource `json:"resources"`
	ScheduledOperations []wireOperation  `json:"scheduled_operations"`
	Status              string           `json:"status"`
	Tags                []store.Tag      `json:"tags"`
}

type wireOperation struct {
	Description         string         `json:"description"`
	Enabled             bool           `json:"enabled"`
	ID                  string         `json:"id"`
	Name                string         `json:"name"`
	OperationType       string         `json:"operation_type"`
	OperationDefinition map[string]any `json:"operation_definition"`
	Trigger             wireTrigger    `json:"trigger"`
	TriggerID           string         `json:"trigger_id"`
}

type wireTrigger struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	Properties struct {
		Pattern   string `json:"pattern"`
		StartTime string `json:"start_time"`
		Format    string `json:"format"`
	} `json:"properties"`
}

// triggerTimeFormat is how the reference writes a trigger's start_time.
const triggerTimeFormat = "2006-01-02 15:04:05"

func policyToWire(p *store.Policy) wirePolicy {
	params := p.Parameters
	if len(params) == 0 {
		params = json.RawMessage(`{"common":{}}`)
	}
	res := make([]store.Resource, len(p.Resources))
	copy(res, p.Resources)
	for i := range res {
		if len(res[i].ExtraInfo) == 0 {
			res[i].ExtraInfo = json.RawMessage("{}")
		}
	}
	tags := p.Tags
	if tags == nil {
		tags = []store.Tag{}
	}
	ops := make([]wireOperation, len(p.Operations))
	for i, op := range p.Operations {
		def := map[string]any{"plan_id": p.ID, "provider_id": service.ProviderID}
		d := op.Definition
		for k, v := range map[string]*int{
			"max_backups": d.MaxBackups, "retention_duration_days": d.RetentionDurationDays,
			"day_backups": d.DayBackups, "week_backups": d.WeekBackups, "month_backups": d.MonthBackups, "year_backups": d.YearBackups,
		} {
			if v != nil {
				def[k] = *v
			}
		}
		if d.Permanent != nil {
			def["permanent"] = *d.Permanent
		}
		if d.Timezone != "" {
			def["timezone"] = d.Timezone
		}
		w := wireOperation{
			Description: op.Description, Enabled: op.Enabled, ID: op.ID, Name: op.Name,
			OperationType: op.OperationType, OperationDefinition: def, TriggerID: op.TriggerID,
			Trigger: wireTrigger{ID: op.TriggerID, Name: op.TriggerName, Type: "time"},
		}
		w.Trigger.Properties.Pattern = op.Pattern
		w.Trigger.Properties.StartTime = op.StartTime.UTC().Format(triggerTimeFormat)
		w.Trigger.Properties.Format = "ical"
		ops[i] = w
	}
	return wirePolicy{
		CreatedAt: formatTime(p.CreatedAt), Description: p.Description, ID: p.ID, Name: p.Name,
		Parameters: params, ProjectID: p.ProjectID, ProviderID: service.ProviderID, Resources: res,
		ScheduledOperations: ops, Status: service.PolicyStatus(p), Tags: tags,
	}
}

func (s *Server) createPolicy(w http.ResponseWriter, r *http.Request) error {
	var body policyBody
	if err := decode(r, &body); err != nil {
		return err
	}
	req, err := body.request()
	if err != nil {
		return err
	}
	p, err := s.svc.CreatePolicy(r.Context(), r.PathValue("project_id"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"policy": policyToWire(p)})
}

func (s *Server) updatePolicy(w http.ResponseWriter, r *http.Request) error {
	var body policyBody
	if err := decode(r, &body); err != nil {
		return err
	}
	req, err := body.request()
	if err != nil {
		return err
	}
	p, err := s.svc.UpdatePolicy(r.Context(), r.PathValue("project_id"), r.PathValue("policy_id"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"policy": policyToWire(p)})
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) error {
	p, err := s.svc.Policy(r.Context(), r.PathValue("project_id"), r.PathValue("policy_id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"policy": policyToWire(p)})
}

func (s *Server) deletePolicy(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.DeletePolicy(r.Context(), r.PathValue("project_id"), r.PathValue("policy_id")); err != nil {
		return err
	}
	// 200 with no body, as the reference says: the cloud's SDK accepts
	// nothing else.
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request) error {
	f, err := policyFilter(r.URL.Query())
	if err != nil {
		return err
	}
	limit := f.Limit
	f.Limit = limit + 1 // one more tells whether there is a next page
	ps, err := s.svc.Policies(r.Context(), r.PathValue("project_id"), f)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listPage(r, s.baseURL(r), "policies", ps, limit, func(p *store.Policy) string { return p.ID }, policyToWire))
}

// policyFilter reads the query of "Querying the Backup Policy List".
func policyFilter(q url.Values) (store.PolicyFilter, error) {
	f := store.PolicyFilter{Name: q.Get("name")}
	all, err := parseAllTenants(q)
	if err != nil {
		return f, err
	}
	pg, err := parsePaging(q)
	if err != nil {
		return f, err
	}
	f.AllTenants, f.Limit, f.Offset, f.Marker = all, pg.limit, pg.offset, pg.marker
	if v := q.Get("sort"); v != "" {
		if len(v) > 255 {
			return f, service.InvalidParam("sort", "is %d characters long; at most 255 are allowed", len(v))
		}
		for _, part := range strings.Split(v, ",") {
			k, dir, _ := strings.Cut(strings.TrimSpace(part), ":")
			if !store.PolicySortKey(k) {
				return f, service.InvalidParam("sort", "unknown key %q; use created_at, updated_at, name or id", truncate(k, 40))
			}
			switch dir {
			case "", "desc":
				f.Sort = append(f.Sort, store.SortKey{Key: k, Desc: true})
			case "asc":
				f.Sort = append(f.Sort, store.SortKey{Key: k})
			default:
				return f, service.InvalidParam("sort", "direction %q of %s: want asc or desc", truncate(dir, 20), k)
			}
		}
	}
	return f, nil
}

// executeBody is the body of "Executing a Backup Policy".
type executeBody struct {
	Checkpoint *struct {
		PlanID     *string `json:"plan_id"`
		Parameters *struct {
			AutoTrigger *bool     `json:"auto_trigger"`
			Resources   *[]string `json:"resources"`
		} `json:"parameters"`
	} `json:"checkpoint"`
}

func (s *Server) executePolicy(w http.ResponseWriter, r *http.Request) error {
	var body executeBody
	if err := decode(r, &body); err != nil {
		return err
	}
	c := body.Checkpoint
	if c == nil {
		return service.InvalidParam("checkpoint", "missing; the body must be {\"checkpoint\": {\"plan_id\": ..., \"parameters\": {...}}}")
	}
	if c.PlanID == nil || *c.PlanID == "" {
		return service.InvalidParam("plan_id", "missing; name the backup policy to execute")
	}
	req := service.ExecuteRequest{PlanID: *c.PlanID}
	if p := c.Parameters; p != nil {
		if p.AutoTrigger != nil {
			req.AutoTrigger = *p.AutoTrigger
		}
		if p.Resources != nil {
			req.Resources = append([]string{}, *p.Resources...)
		}
	}
	cp, err := s.svc.ExecutePolicy(r.Context(), r.PathValue("project_id"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"checkpoint": checkpointToWire(cp)})
}
