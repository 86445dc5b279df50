package console

import (
	"fmt"
	"net/http"
	"slices"
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
	v := c.policiesView(r, s)
	v.Data.(map[string]any)["Form"] = newPolicyForm()
	c.render(w, "policies", http.StatusOK, v)
}

// policiesView is the policies page: every policy of the project with its
// next fire times and retention in words.
func (c *Console) policiesView(r *http.Request, s *session) view {
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
	return v
}

// policyForm is the policy form, to create a policy or edit one: the
// schedule builder (days ticked, one time of day in UTC), retention and
// servers.
type policyForm struct {
	Action, Submit    string
	Name, Description string
	Days              map[string]bool
	Time              string // HH:MM, UTC
	Rule              string // on edit, a rule the builder cannot show (saving replaces it)
	Enabled           bool
	Keep              string // "count", "days" or "all"
	MaxBackups        string
	RetentionDays     string
	Day, Week         string // day/week/month/year_backups; "" is none
	Month, Year       string
	Timezone          string // of the day/week/month/year periods, e.g. UTC+08:00
	Servers           map[string]bool
}

func newPolicyForm() policyForm {
	return policyForm{Action: "/console/policies", Submit: "Create policy", Days: map[string]bool{}, Enabled: true,
		Keep: "count", MaxBackups: "7", Timezone: "UTC+00:00", Servers: map[string]bool{}}
}

// editForm fills the form from policy p.
func editForm(p *store.Policy) policyForm {
	f := newPolicyForm()
	f.Action, f.Submit = "/console/policies/"+p.ID, "Save policy"
	f.Name, f.Description = p.Name, p.Description
	for _, r := range p.Resources {
		f.Servers[r.ID] = true
	}
	if len(p.Operations) == 0 {
		return f
	}
	op := p.Operations[0]
	f.Enabled = op.Enabled
	if days, at, ok := builderSchedule(op.Pattern); ok {
		for _, d := range days {
			f.Days[d] = true
		}
		f.Time = at
	} else {
		f.Rule = op.Pattern
	}
	d := op.Definition
	str := func(n *int) string {
		if n == nil || *n <= 0 {
			return ""
		}
		return strconv.Itoa(*n)
	}
	f.MaxBackups, f.RetentionDays = str(d.MaxBackups), str(d.RetentionDurationDays)
	switch {
	case d.Permanent != nil && *d.Permanent:
		f.Keep = "all"
	case f.MaxBackups != "":
		f.Keep = "count"
	case f.RetentionDays != "":
		f.Keep = "days"
	}
	f.Day, f.Week, f.Month, f.Year = str(d.DayBackups), str(d.WeekBackups), str(d.MonthBackups), str(d.YearBackups)
	if d.Timezone != "" {
		f.Timezone = d.Timezone
	}
	return f
}

// builderSchedule reads a pattern the builder could have written: weekly,
// on the days it names, at one time of day.
func builderSchedule(pattern string) (days []string, at string, ok bool) {
	if _, err := schedule.Parse(pattern); err != nil {
		return nil, "", false
	}
	var rule string
	for _, l := range strings.Split(strings.ReplaceAll(pattern, "\r\n", "\n"), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(strings.ToUpper(l), "RRULE:") {
			rule = strings.ToUpper(strings.ReplaceAll(l[len("RRULE:"):], " ", ""))
		}
	}
	parts := map[string]string{}
	for _, p := range strings.Split(rule, ";") {
		k, v, _ := strings.Cut(p, "=")
		parts[k] = v
	}
	h, herr := strconv.Atoi(parts["BYHOUR"])
	m, merr := strconv.Atoi(parts["BYMINUTE"])
	if len(parts) != 4 || herr != nil || merr != nil || parts["FREQ"] != "WEEKLY" {
		return nil, "", false
	}
	for _, d := range strings.Split(parts["BYDAY"], ",") {
		if !slices.ContainsFunc(weekdays, func(w struct{ Code, Name string }) bool { return w.Code == d }) {
			return nil, "", false
		}
		days = append(days, d)
	}
	return days, fmt.Sprintf("%02d:%02d", h, m), true
}

// request reads the submitted form into f and builds the policy request;
// a message for the user when the form itself is incomplete. Ranges and
// combinations are the service's to check (its refusals name the field).
func (f *policyForm) request(r *http.Request) (service.PolicyRequest, string) {
	f.Name, f.Description = strings.TrimSpace(r.Form.Get("name")), strings.TrimSpace(r.Form.Get("description"))
	f.Enabled = r.Form.Get("enabled") == "on"
	f.Keep, f.MaxBackups, f.RetentionDays = r.Form.Get("keep"), strings.TrimSpace(r.Form.Get("max_backups")), strings.TrimSpace(r.Form.Get("retention_days"))
	f.Day, f.Week, f.Month, f.Year = r.Form.Get("day_backups"), r.Form.Get("week_backups"), r.Form.Get("month_backups"), r.Form.Get("year_backups")
	f.Timezone = strings.TrimSpace(r.Form.Get("timezone"))
	f.Time = r.Form.Get("time")
	f.Days, f.Servers = map[string]bool{}, map[string]bool{}
	var days []string
	for _, d := range weekdays {
		if r.Form.Get("day-"+d.Code) == "on" {
			days = append(days, d.Code)
			f.Days[d.Code] = true
		}
	}
	hh, mm, ok := strings.Cut(f.Time, ":")
	h, herr := strconv.Atoi(hh)
	m, merr := strconv.Atoi(mm)
	if len(days) == 0 || !ok || herr != nil || merr != nil || h < 0 || h > 23 || m < 0 || m > 59 {
		return service.PolicyRequest{}, "Choose at least one day and a time (HH:MM, UTC)."
	}
	pattern := schedule.Pattern(fmt.Sprintf("FREQ=WEEKLY;BYDAY=%s;BYHOUR=%d;BYMINUTE=%d", strings.Join(days, ","), h, m))
	num := func(field, v string) (*int, string) {
		if v = strings.TrimSpace(v); v == "" {
			return nil, ""
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, field + " must be a whole number."
		}
		return &n, ""
	}
	var def store.OperationDefinition
	var msg string
	switch f.Keep {
	case "all":
		yes := true
		def.Permanent = &yes
	case "days":
		if def.RetentionDurationDays, msg = num("Days to keep", f.RetentionDays); msg == "" && def.RetentionDurationDays == nil {
			msg = "Give the number of days to keep backups."
		}
	default:
		if def.MaxBackups, msg = num("Backups to keep", f.MaxBackups); msg == "" && def.MaxBackups == nil {
			msg = "Give the number of backups to keep."
		}
	}
	for _, x := range []struct {
		dst  **int
		name string
		v    string
	}{{&def.DayBackups, "Daily backups", f.Day}, {&def.WeekBackups, "Weekly backups", f.Week}, {&def.MonthBackups, "Monthly backups", f.Month}, {&def.YearBackups, "Yearly backups", f.Year}} {
		if msg != "" {
			break
		}
		*x.dst, msg = num(x.name, x.v)
		if *x.dst != nil {
			def.Timezone = f.Timezone
		}
	}
	if msg != "" {
		return service.PolicyRequest{}, msg
	}
	res := []store.Resource{}
	for _, id := range r.Form["server"] {
		res = append(res, store.Resource{ID: id, Type: service.ResourceTypeServer, Name: id})
		f.Servers[id] = true
	}
	opType := service.OperationBackup
	return service.PolicyRequest{Name: &f.Name, Description: &f.Description, Resources: &res,
		Operations: &[]service.OperationRequest{{Name: &f.Name, Enabled: &f.Enabled, OperationType: &opType,
			Definition: &service.DefinitionRequest{OperationDefinition: def}, Pattern: &pattern}}}, ""
}

// createPolicy creates the policy of the form through the service (all its
// checks apply).
func (c *Console) createPolicy(w http.ResponseWriter, r *http.Request, s *session) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	f := newPolicyForm()
	req, msg := f.request(r)
	if msg == "" {
		provider := service.ProviderID
		req.ProviderID = &provider
		p, err := c.cfg.Service.CreatePolicy(r.Context(), s.project, req)
		if err == nil {
			c.flash(w, r, "/console/policies", "Policy "+p.Name+" created: "+ruleOf(p)+".")
			return
		}
		msg = c.refusal(err)
	}
	// Refused: the policies page again, its form as typed.
	v := c.policiesView(r, s)
	v.Error = msg
	v.Data.(map[string]any)["Form"] = f
	c.render(w, "policies", statusOf(msg), v)
}

// editPolicyPage shows the form of a policy of the session's project.
func (c *Console) editPolicyPage(w http.ResponseWriter, r *http.Request, s *session) {
	p, err := c.cfg.Service.Policy(r.Context(), s.project, r.PathValue("id"))
	if err != nil {
		c.policyNotFound(w, s, err)
		return
	}
	c.policyFormPage(w, r, s, "Edit policy "+p.Name, editForm(p), "")
}

// updatePolicy saves the form over the policy: name, description, servers
// (associated and disassociated), schedule and retention.
func (c *Console) updatePolicy(w http.ResponseWriter, r *http.Request, s *session) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	p, err := c.cfg.Service.Policy(r.Context(), s.project, r.PathValue("id"))
	if err != nil {
		c.policyNotFound(w, s, err)
		return
	}
	f := editForm(p)
	req, msg := f.request(r)
	if msg == "" {
		if len(p.Operations) > 0 {
			(*req.Operations)[0].ID = p.Operations[0].ID
		}
		saved, err := c.cfg.Service.UpdatePolicy(r.Context(), s.project, p.ID, req)
		if err == nil {
			c.flash(w, r, "/console/policies", "Policy "+saved.Name+" saved: "+ruleOf(saved)+"; "+describeRetention(saved.Operations[0].Definition)+".")
			return
		}
		msg = c.refusal(err)
	}
	c.policyFormPage(w, r, s, "Edit policy "+p.Name, f, msg)
}

// policyFormPage shows the edit form of a policy (again, with what was
// typed and why it was refused, when msg is set).
func (c *Console) policyFormPage(w http.ResponseWriter, r *http.Request, s *session, title string, f policyForm, msg string) {
	v := c.page(title, s)
	v.Error = msg
	srvs, _ := c.cfg.Service.Servers(r.Context(), s.project)
	v.Data = map[string]any{"Form": f, "Servers": srvs, "Days": weekdays}
	c.render(w, "policy", statusOf(msg), v)
}

// policyNotFound answers an id that is no policy of the session's project
// (another project's included) as the API does: not found.
func (c *Console) policyNotFound(w http.ResponseWriter, s *session, err error) {
	v := c.page("Edit policy", s)
	v.Error = c.refusal(err)
	v.Data = map[string]any{"Form": nil}
	c.render(w, "policy", http.StatusNotFound, v)
}

func statusOf(msg string) int {
	if msg != "" {
		return http.StatusBadRequest
	}
	return http.StatusOK
}

func ruleOf(p *store.Policy) string {
	if len(p.Operations) == 0 {
		return ""
	}
	if days, at, ok := builderSchedule(p.Operations[0].Pattern); ok {
		return "every " + strings.Join(days, ", ") + " at " + at + " UTC"
	}
	return "its schedule"
}

func (c *Console) executePolicy(w http.ResponseWriter, r *http.Request, s *session) {
	_, err := c.cfg.Service.ExecutePolicy(r.Context(), s.project, service.ExecuteRequest{PlanID: r.PathValue("id")})
	msg := "The policy's servers are being backed up."
	if err != nil {
		msg = c.refusal(err)
	}
	c.flash(w, r, "/console/policies", msg)
}

func (c *Console) deletePolicy(w http.ResponseWriter, r *http.Request, s *session) {
	msg := "The policy was deleted; its backups stay."
	if err := c.cfg.Service.DeletePolicy(r.Context(), s.project, r.PathValue("id")); err != nil {
		msg = c.refusal(err)
	}
	c.flash(w, r, "/console/policies", msg)
}
