// Package console is the web console of csbs: server-rendered pages under
// /console/ on the API's listener, over the same service layer the API
// uses (no second copy of any rule), scoped to the signed-in project.
//
// Security rules every page keeps:
//   - The session is the identity's token in an HttpOnly, SameSite=Strict
//     cookie (Secure under HTTPS); every request validates it, and an
//     expired or revoked one goes back to the sign-in page. With auth.mode
//     none there is no token: the cookie names the project and a banner
//     says the console is open.
//   - Every state change is a POST carrying a CSRF token bound to the
//     session (an HMAC of the cookie); one without it is refused (403).
//   - A strict Content-Security-Policy: scripts, styles and images only from
//     /console/static/ (embedded in the binary), no inline script, no frames.
//   - Pages read and change only the session's project: ids of another
//     project are answered as not found, as by the API.
package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/auth"
	"github.com/csbs/csbs/internal/service"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Issuer authenticates a user with a password (the builtin identity).
type Issuer interface {
	Issue(ctx context.Context, c auth.Credentials) (string, *auth.Principal, error)
}

// Config wires the console.
type Config struct {
	Service *service.Service
	// Validator checks session tokens; nil means auth.mode none.
	Validator auth.Validator
	// Issuer signs users in with a password (builtin identity or Keystone);
	// nil with auth.mode none.
	Issuer Issuer
	// CSRFKey keys the CSRF tokens; processes behind one address must
	// share it (csbs serve derives it from the token key file).
	CSRFKey []byte
	Log     *slog.Logger
}

// Console serves /console/.
type Console struct {
	cfg   Config
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if len(cfg.CSRFKey) == 0 {
		return nil, errors.New("console: a CSRF key is needed")
	}
	c := &Console{cfg: cfg, pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	funcs := template.FuncMap{"time": formatTime, "iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) }, "status": service.ClientStatus, "running": running,
		"add": func(a, b int) int { return a + b }, "sub": func(a, b int) int { return a - b }, "mb": func(n int64) int64 { return (n + 1<<20 - 1) >> 20 }}
	for _, page := range []string{"signin", "servers", "backups", "backup", "restore", "jobs", "quotas", "policies", "policy", "overview"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html", "templates/"+page+".html")
		if err != nil {
			return nil, err
		}
		c.pages[page] = t
	}
	static, _ := fs.Sub(staticFS, "static")
	c.mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET /console/signin", c.signinPage)
	c.mux.HandleFunc("POST /console/signin", c.signin)
	c.mux.HandleFunc("POST /console/signout", c.session(c.signout))
	c.mux.HandleFunc("POST /console/project", c.session(c.switchProject))
	c.mux.HandleFunc("GET /console/{$}", c.session(func(w http.ResponseWriter, r *http.Request, s *session) {
		http.Redirect(w, r, "/console/overview", http.StatusSeeOther)
	}))
	c.mux.HandleFunc("GET /console/overview", c.session(c.overviewPage))
	c.mux.HandleFunc("GET /console/servers", c.session(c.serversPage))
	c.mux.HandleFunc("POST /console/servers/{id}/backup", c.session(c.backupNow))
	c.mux.HandleFunc("GET /console/backups", c.session(c.backupsPage))
	c.mux.HandleFunc("GET /console/backups/{id}", c.session(c.backupPage))
	c.mux.HandleFunc("GET /console/backups/{id}/progress", c.session(c.backupProgress))
	c.mux.HandleFunc("POST /console/backups/{id}/delete", c.session(c.deleteBackup))
	c.mux.HandleFunc("GET /console/backups/{id}/restore", c.session(c.restorePage))
	c.mux.HandleFunc("POST /console/backups/{id}/restore", c.session(c.restore))
	c.mux.HandleFunc("GET /console/jobs", c.session(c.jobsPage))
	c.mux.HandleFunc("GET /console/quotas", c.session(c.quotasPage))
	c.mux.HandleFunc("GET /console/policies", c.session(c.policiesPage))
	c.mux.HandleFunc("POST /console/backups/{id}/tags", c.session(c.addTag))
	c.mux.HandleFunc("POST /console/backups/{id}/tags/delete", c.session(c.deleteTag))
	c.mux.HandleFunc("POST /console/policies/{id}/tags", c.session(c.addTag))
	c.mux.HandleFunc("POST /console/policies/{id}/tags/delete", c.session(c.deleteTag))
	c.mux.HandleFunc("POST /console/policies", c.session(c.createPolicy))
	c.mux.HandleFunc("GET /console/policies/{id}/edit", c.session(c.editPolicyPage))
	c.mux.HandleFunc("POST /console/policies/{id}", c.session(c.updatePolicy))
	c.mux.HandleFunc("POST /console/policies/{id}/execute", c.session(c.executePolicy))
	c.mux.HandleFunc("POST /console/policies/{id}/delete", c.session(c.deletePolicy))
	return c, nil
}

// ServeHTTP adds the security headers to every answer.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// csrf is the CSRF token of a session cookie value.
func (c *Console) csrf(cookie string) string {
	m := hmac.New(sha256.New, c.cfg.CSRFKey)
	m.Write([]byte("csbs-console-csrf\x00" + cookie))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// view is what every page template gets.
type view struct {
	Title   string
	Open    bool   // auth.mode none: the console is open to anyone
	Project string // "" on the sign-in page
	Admin   bool   // may switch projects
	Home    string // the session token's own project
	User    string
	CSRF    string
	Flash   string
	Error   string
	Data    any
}

// flash sends the browser to path (a page of the console, possibly with a
// query), which shows msg.
func (c *Console) flash(w http.ResponseWriter, r *http.Request, path, msg string) {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	http.Redirect(w, r, path+sep+"flash="+url.QueryEscape(msg), http.StatusSeeOther)
}

// page is the view of a page of the signed-in session s.
func (c *Console) page(title string, s *session) view {
	return view{Title: title, Project: s.project, Admin: s.admin, Home: s.home, User: s.user, CSRF: c.csrf(s.cookie)}
}

func (c *Console) render(w http.ResponseWriter, page string, status int, v view) {
	v.Open = c.cfg.Validator == nil
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := c.pages[page].Execute(w, v); err != nil {
		c.cfg.Log.Error("console: render", "page", page, "err", err)
	}
}

// running reports whether a backup stored with status is still changing
// (the page polls it and reloads once it is done).
func running(status string) bool {
	switch service.ClientStatus(status) {
	case "protecting", "restoring", "waiting_restore", "deleting":
		return true
	}
	return false
}

func formatTime(t any) string {
	switch v := t.(type) {
	case time.Time:
		if v.IsZero() {
			return "-"
		}
		return v.UTC().Format("2006-01-02 15:04:05 UTC")
	case *time.Time:
		if v == nil || v.IsZero() {
			return "-"
		}
		return v.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	return "-"
}
