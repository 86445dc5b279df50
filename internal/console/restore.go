package console

import (
	"net/http"
	"net/url"
	"sort"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// restoreForm is what the restore page shows: the backup, the servers it
// can go to, and for each of its disks the disks of the chosen server.
type restoreForm struct {
	Item    *store.Item
	Servers []compute.Server
	Target  compute.Server
}

func (c *Console) restorePage(w http.ResponseWriter, r *http.Request, s *session) {
	v := c.page("Restore", s)
	v.Flash = r.URL.Query().Get("flash")
	it, err := c.cfg.Service.Item(r.Context(), s.project, r.PathValue("id"))
	if err != nil {
		v.Error = c.refusal(err)
		c.render(w, "restore", http.StatusNotFound, v)
		return
	}
	srvs, err := c.cfg.Service.Servers(r.Context(), s.project)
	if err != nil {
		v.Error = c.refusal(err)
	}
	sort.Slice(srvs, func(i, j int) bool { return srvs[i].Name < srvs[j].Name })
	f := restoreForm{Item: it, Servers: srvs}
	want := r.URL.Query().Get("server")
	if want == "" {
		want = it.ResourceID
	}
	for _, srv := range srvs {
		if srv.ID == want {
			f.Target = srv
		}
	}
	v.Data = f
	c.render(w, "restore", http.StatusOK, v)
}

// restore checks the mapping with check_restorable, then starts the
// restore and shows the backup, whose bar moves while it runs.
func (c *Console) restore(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	it, err := c.cfg.Service.Item(ctx, s.project, r.PathValue("id"))
	back := "/console/backups/" + url.PathEscape(r.PathValue("id")) + "/restore?server=" + url.QueryEscape(r.PostFormValue("server"))
	if err != nil {
		c.flash(w, r, "/console/backups", c.refusal(err))
		return
	}
	var vols []store.VolumeMapping
	for _, vb := range it.Info.Volumes {
		if target := r.PostFormValue("disk-" + vb.ID); target != "" {
			vols = append(vols, store.VolumeMapping{BackupID: vb.ID, VolumeID: target})
		}
	}
	server := r.PostFormValue("server")
	res, err := c.cfg.Service.CheckRestorable(ctx, s.project, []service.RestorableCheck{{ItemID: it.ID, ResourceID: server,
		ResourceType: service.ResourceTypeServer, Volumes: vols}})
	switch {
	case err != nil:
		c.flash(w, r, back, c.refusal(err))
		return
	case len(res) == 1 && !res[0].Result:
		c.flash(w, r, back, res[0].ErrorCode+": "+res[0].ErrorMsg)
		return
	}
	if _, err := c.cfg.Service.Restore(ctx, s.project, service.RestoreRequest{ItemID: it.ID, ServerID: server,
		PowerOn: r.PostFormValue("power_on") == "on", Volumes: vols}); err != nil {
		c.flash(w, r, back, c.refusal(err))
		return
	}
	c.flash(w, r, "/console/backups/"+url.PathEscape(it.ID), "Restoring to "+server+".")
}
