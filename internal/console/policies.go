package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/schedule"
	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// The schedule builder writes weekly rules: the days ticked, at one time
// of day (UTC, as the scheduler runs).
var weekdays = []struct{ Code, Name string }{
	{"MO", "Monday"}, {"TU", "Tuesday"}, {"WE", "Wednesday"}, {"TH", "Thursday"}, {"FR", "Friday"}, {"SA", "Saturday"}, {"SU", "Sunday"},
}

// policyRow is a policy with what its page shows: the next fire times
// (computed by the scheduler's own rules) and its retention in words.
type policyRow struct {
	*store.Policy
	Next      []time.Time
	Retention string
	Enabled   bool
}

func describeRetention(d store.OperationDefinition) string {
	var parts []string
	switch {
	case d.Permanent != nil && *d.Permanent:
		return "keeps every automatic backup"
	case d.MaxBackups != nil && *d.MaxBackups > 0:
		parts = append(parts, fmt.Sprintf("keeps the newest %d automatic backups of each server", *d.MaxBackups))
	case d.RetentionDurationDays != nil && *d.RetentionDurationDays > 0:
		parts = append(parts, fmt.Sprintf("keeps automatic backups for %d days", *d.RetentionDurationDays))
	}
	for _, x := range []struct {
		n    *int
		unit string
	}{{d.DayBackups, "day"}, {d.WeekBackups, "week"}, {d.MonthBackups, "month"}, {d.YearBackups, "year"}} {
		if x.n != nil && *x.n > 0 {
			parts = append(parts, fmt.Sprintf("the last backup of each of the last %d %ss", *x.n, x.unit))
		}
	}
	if len(parts) == 0 {
		return "no retention rule"
	}
	return strings.Join(parts, ", and ")
}

func nextFires(pattern string, n int, from time.Time) []time.Time {
	s, err := schedule.Parse(pattern)
	if err != nil {
		return nil
	}
	var out []time.Time
	t := from
	for range n {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

func (c *Console) policiesPage(w http.ResponseWriter, r *http.Request, s *session) {
	v := c.page("Policies", s)
	v.Flash = r.URL.Query().Get("flash")
	ps, err := c.cfg.Service.Policies(r.Context(), s.project, store.PolicyFilter{Limit: 100})
	if err != nil {
		v.Error = c.refusal(err)
	}
	var rows []policyRow
	for _, p := range ps {
		row := policyRow{Policy: p}
		for _, op := range p.Operations {
			row.Enabled = row.Enabled || op.Enabled
			row.Retention = describeRetention(op.Definition)
			if op.Enabled {
				row.Next = nextFires(op.Pattern, 10, time.Now())
			}
		}
		rows = append(rows, row)
	}
	srvs, _ := c.cfg.Service.Servers(r.Context(), s.project)
	v.Data = map[string]any{"Policies": rows, "Servers": srvs, "Days": weekdays}
	c.render(w, "policies", http.StatusOK, v)
}

// createPolicy builds the iCalendar rule from the days and time of the
// form and creates the policy through the service (all its checks apply).
func (c *Console) createPolicy(w http.ResponseWriter, r *http.Request, s *session) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	back := func(msg string) {
		http.Redirect(w, r, "/console/policies?flash="+url.QueryEscape(msg), http.StatusSeeOther)
	}
	var days []string
	for _, d := range weekdays {
		if r.Form.Get("day-"+d.Code) == "on" {
			days = append(days, d.Code)
		}
	}
	hh, mm, ok := strings.Cut(r.Form.Get("time"), ":")
	h, herr := strconv.Atoi(hh)
	m, merr := strconv.Atoi(mm)
	if len(days) == 0 || !ok || herr != nil || merr != nil || h < 0 || h > 23 || m < 0 || m > 59 {
		back("Choose at least one day and a time (HH:MM, UTC).")
		return
	}
	rule := fmt.Sprintf("FREQ=WEEKLY;BYDAY=%s;BYHOUR=%d;BYMINUTE=%d", strings.Join(days, ","), h, m)
	pattern := schedule.Pattern(rule)
	def := store.OperationDefinition{}
	if n, err := strconv.Atoi(r.Form.Get("max_backups")); err == nil && n > 0 {
		def.MaxBackups = &n
	} else {
		yes := true
		def.Permanent = &yes
	}
	var res []store.Resource
	for _, id := range r.Form["server"] {
		res = append(res, store.Resource{ID: id, Type: service.ResourceTypeServer, Name: id})
	}
	name := strings.TrimSpace(r.Form.Get("name"))
	provider, enabled, opType := service.ProviderID, true, "backup"
	_, err := c.cfg.Service.CreatePolicy(r.Context(), s.project, service.PolicyRequest{
		Name: &name, ProviderID: &provider, Resources: &res,
		Operations: &[]service.OperationRequest{{Name: &name, Enabled: &enabled, OperationType: &opType,
			Definition: &service.DefinitionRequest{OperationDefinition: def}, Pattern: &pattern}},
	})
	if err != nil {
		back(c.refusal(err))
		return
	}
	back("Policy " + name + " created: " + rule + ".")
}

func (c *Console) executePolicy(w http.ResponseWriter, r *http.Request, s *session) {
	_, err := c.cfg.Service.ExecutePolicy(r.Context(), s.project, service.ExecuteRequest{PlanID: r.PathValue("id")})
	msg := "The policy's servers are being backed up."
	if err != nil {
		msg = c.refusal(err)
	}
	http.Redirect(w, r, "/console/policies?flash="+url.QueryEscape(msg), http.StatusSeeOther)
}

func (c *Console) deletePolicy(w http.ResponseWriter, r *http.Request, s *session) {
	msg := "The policy was deleted; its backups stay."
	if err := c.cfg.Service.DeletePolicy(r.Context(), s.project, r.PathValue("id")); err != nil {
		msg = c.refusal(err)
	}
	http.Redirect(w, r, "/console/policies?flash="+url.QueryEscape(msg), http.StatusSeeOther)
}
