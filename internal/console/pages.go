package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// fail shows a service refusal (its message names what was wrong) on the
// page it came from, or a generic message for anything else.
func (c *Console) refusal(err error) string {
	if e, ok := service.AsError(err); ok {
		return e.Code + ": " + e.Msg
	}
	c.cfg.Log.Error("console", "err", err)
	return "The request failed; see the service log."
}

// serverRow is a server with what the page shows of it.
type serverRow struct {
	compute.Server
	Protectable bool
	Why         string // why it cannot be backed up
	Last        *store.Item
	Policy      *store.Policy // the policy it is bound to, if any
}

func (c *Console) serversPage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	v := c.page("Servers", s)
	v.Flash = r.URL.Query().Get("flash")
	srvs, err := c.cfg.Service.Servers(ctx, s.project)
	if err != nil {
		v.Error = c.refusal(err)
		c.render(w, "servers", http.StatusInternalServerError, v)
		return
	}
	sort.Slice(srvs, func(i, j int) bool { return srvs[i].Name < srvs[j].Name })
	var checks []service.ProtectableCheck
	for _, srv := range srvs {
		checks = append(checks, service.ProtectableCheck{ResourceID: srv.ID, ResourceType: service.ResourceTypeServer})
	}
	results, err := c.cfg.Service.CheckProtectable(ctx, s.project, checks)
	if err != nil {
		v.Error = c.refusal(err)
	}
	// The policy each server is bound to (a server is in at most one).
	bound := map[string]*store.Policy{}
	if ps, err := c.cfg.Service.Policies(ctx, s.project, store.PolicyFilter{Limit: 100}); err == nil {
		for _, p := range ps {
			for _, res := range p.Resources {
				bound[res.ID] = p
			}
		}
	}
	rows := make([]serverRow, len(srvs))
	for i, srv := range srvs {
		rows[i] = serverRow{Server: srv, Policy: bound[srv.ID]}
		if i < len(results) {
			rows[i].Protectable, rows[i].Why = results[i].Result, results[i].ErrorMsg
		}
		if items, err := c.cfg.Service.Items(ctx, s.project, store.ItemFilter{ResourceID: srv.ID, Limit: 1}); err == nil && len(items) > 0 {
			rows[i].Last = items[0]
		}
	}
	v.Data = rows
	c.render(w, "servers", http.StatusOK, v)
}

func (c *Console) backupNow(w http.ResponseWriter, r *http.Request, s *session) {
	cp, err := c.cfg.Service.Protect(r.Context(), s.project, r.PathValue("id"), service.ProtectRequest{
		BackupName: r.PostFormValue("name"), ResourceType: service.ResourceTypeServer})
	if err != nil {
		c.flash(w, r, "/console/servers", c.refusal(err))
		return
	}
	http.Redirect(w, r, "/console/backups/"+url.PathEscape(cp.Items[0].ID), http.StatusSeeOther)
}

func (c *Console) backupsPage(w http.ResponseWriter, r *http.Request, s *session) {
	v := c.page("Backups", s)
	v.Flash = r.URL.Query().Get("flash")
	f := store.ItemFilter{Limit: 100, ResourceID: r.URL.Query().Get("server")}
	if st := r.URL.Query().Get("status"); st != "" {
		f.Statuses = service.StoredStatuses(st)
	}
	items, err := c.cfg.Service.Items(r.Context(), s.project, f)
	if err != nil {
		v.Error = c.refusal(err)
	}
	v.Data = items
	c.render(w, "backups", http.StatusOK, v)
}

func (c *Console) backupPage(w http.ResponseWriter, r *http.Request, s *session) {
	v := c.page("Backup", s)
	v.Flash = r.URL.Query().Get("flash")
	it, err := c.cfg.Service.Item(r.Context(), s.project, r.PathValue("id"))
	if err != nil {
		v.Error = c.refusal(err)
		c.render(w, "backup", http.StatusNotFound, v)
		return
	}
	v.Data = it
	c.render(w, "backup", http.StatusOK, v)
}

// backupProgress is what console.js polls to move a progress bar.
func (c *Console) backupProgress(w http.ResponseWriter, r *http.Request, s *session) {
	it, err := c.cfg.Service.Item(r.Context(), s.project, r.PathValue("id"))
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]any{"status": "gone"})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"status": service.ClientStatus(it.Status), "progress": it.Info.Progress,
		"fail_reason": it.Info.FailReason})
}

func (c *Console) deleteBackup(w http.ResponseWriter, r *http.Request, s *session) {
	it, err := c.cfg.Service.Item(r.Context(), s.project, r.PathValue("id"))
	if err == nil {
		err = c.cfg.Service.DeleteCheckpoint(r.Context(), s.project, it.CheckpointID, []string{it.ID})
	}
	if err != nil {
		c.flash(w, r, "/console/backups", c.refusal(err))
		return
	}
	c.flash(w, r, "/console/backups", "The backup is being deleted.")
}

func (c *Console) jobsPage(w http.ResponseWriter, r *http.Request, s *session) {
	v := c.page("Operation logs", s)
	jobs, err := c.cfg.Service.OperationLogs(r.Context(), s.project, service.OperationLogFilter{Status: r.URL.Query().Get("status"), Limit: 100})
	if err != nil {
		v.Error = c.refusal(err)
	}
	v.Data = jobs
	c.render(w, "jobs", http.StatusOK, v)
}

func (c *Console) quotasPage(w http.ResponseWriter, r *http.Request, s *session) {
	v := c.page("Quotas", s)
	q, err := c.cfg.Service.Quotas(r.Context(), s.project)
	if err != nil {
		v.Error = c.refusal(err)
	}
	v.Data = q
	c.render(w, "quotas", http.StatusOK, v)
}
