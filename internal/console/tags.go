package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

// Tags of backups and policies: the same service calls as the twelve tag
// operations of the API, so the same limits (10 tags, key and value rules).

// tagPath is where a tag form of kind goes back to.
func tagPath(kind, id string) string {
	if kind == service.TagKindPolicy {
		return "/console/policies"
	}
	return "/console/backups/" + url.PathEscape(id)
}

func tagKind(r *http.Request) string {
	if strings.HasPrefix(r.URL.Path, "/console/policies/") {
		return service.TagKindPolicy
	}
	return service.TagKindBackup
}

func (c *Console) addTag(w http.ResponseWriter, r *http.Request, s *session) {
	kind, id := tagKind(r), r.PathValue("id")
	err := c.cfg.Service.AddTag(r.Context(), kind, s.project, id, store.Tag{Key: r.PostFormValue("key"), Value: r.PostFormValue("value")})
	msg := "Tag added."
	if err != nil {
		msg = c.refusal(err)
	}
	c.flash(w, r, tagPath(kind, id), msg)
}

func (c *Console) deleteTag(w http.ResponseWriter, r *http.Request, s *session) {
	kind, id := tagKind(r), r.PathValue("id")
	err := c.cfg.Service.DeleteTag(r.Context(), kind, s.project, id, r.PostFormValue("key"))
	msg := "Tag removed."
	if err != nil {
		msg = c.refusal(err)
	}
	c.flash(w, r, tagPath(kind, id), msg)
}
