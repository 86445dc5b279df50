package console

import (
	"context"
	"crypto/hmac"
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/csbs/csbs/internal/auth"
)

// cookieName holds the session: the identity's token, or with auth.mode
// none the project id.
const cookieName = "csbs_session"

// projectCookie holds the project an admin switched to.
const projectCookie = "csbs_project"

// session is the signed-in user of a request.
type session struct {
	project string // the project the pages show and change
	home    string // the token's own project
	user    string
	admin   bool   // holds the admin role: may switch projects, as the API lets admins act in any
	cookie  string // its value, which the CSRF token is bound to
}

var projectRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// session wraps a page: it finds the session (or sends to sign-in) and, on
// a POST, checks the CSRF token.
func (c *Console) session(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := c.current(r)
		if err != nil {
			if errors.Is(err, auth.ErrInvalidToken) || errors.Is(err, http.ErrNoCookie) {
				c.clearCookie(w, r, cookieName)
				http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
				return
			}
			c.cfg.Log.Error("console: check session", "err", err)
			http.Error(w, "the identity service could not check the session; try again later", http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(c.csrf(s.cookie))) {
				http.Error(w, "refused: the form's CSRF token is missing or wrong; reload the page and try again", http.StatusForbidden)
				return
			}
		}
		h(w, r, s)
	}
}

// current returns the session of r.
func (c *Console) current(r *http.Request) (*session, error) {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return nil, err
	}
	if c.cfg.Validator == nil {
		if !projectRe.MatchString(ck.Value) {
			return nil, auth.ErrInvalidToken
		}
		return &session{project: ck.Value, cookie: ck.Value}, nil
	}
	p, err := c.cfg.Validator.Validate(r.Context(), ck.Value)
	if err != nil {
		return nil, err
	}
	if p.ProjectID == "" {
		return nil, auth.ErrInvalidToken // a domain token scopes no project
	}
	s := &session{project: p.ProjectID, home: p.ProjectID, user: p.UserName, admin: p.Admin(), cookie: ck.Value}
	// Only an admin's switch counts: the cookie of anyone else is ignored.
	if pc, err := r.Cookie(projectCookie); err == nil && s.admin && projectRe.MatchString(pc.Value) {
		s.project = pc.Value
	}
	return s, nil
}

// switchProject makes the pages of an admin's session show another project
// (empty: the token's own again). Anyone else is refused.
func (c *Console) switchProject(w http.ResponseWriter, r *http.Request, s *session) {
	if !s.admin {
		http.Error(w, "refused: only admins (the admin role) may switch projects", http.StatusForbidden)
		return
	}
	to := strings.TrimSpace(r.PostFormValue("project"))
	if to != "" && !projectRe.MatchString(to) {
		c.flash(w, r, "/console/servers", "A project id is 1 to 64 letters, digits, - or _.")
		return
	}
	if to == "" || to == s.home {
		c.clearCookie(w, r, projectCookie)
		to = s.home
	} else {
		c.setCookie(w, r, projectCookie, to)
	}
	c.cfg.Log.Info("console: admin switched project", "user", s.user, "project_id", to)
	c.flash(w, r, "/console/servers", "Now working in project "+to+".")
}

// setCookie sets the console's cookie name (the session or an admin's
// project): HttpOnly, SameSite=Strict, Secure under HTTPS.
func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/console/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"})
}

// clearCookie removes the console's cookie name.
func (c *Console) clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/console/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, "signin", http.StatusOK, view{Title: "Sign in"})
}

// signin checks the form against the identity (builtin or Keystone: user,
// domain, password, project) and starts the session; with auth.mode none it only takes the
// project.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	project := strings.TrimSpace(r.PostFormValue("project"))
	fail := func(msg string) {
		c.render(w, "signin", http.StatusUnauthorized, view{Title: "Sign in", Error: msg})
	}
	if c.cfg.Validator == nil {
		if !projectRe.MatchString(project) {
			fail("Give the id of the project to work in.")
			return
		}
		c.setCookie(w, r, cookieName, project)
		http.Redirect(w, r, "/console/servers", http.StatusSeeOther)
		return
	}
	if c.cfg.Issuer == nil {
		fail("Signing in to the console needs auth.mode builtin or keystone.")
		return
	}
	cred := auth.Credentials{UserName: r.PostFormValue("user"), UserDomainName: r.PostFormValue("domain"), Password: r.PostFormValue("password")}
	if cred.UserDomainName == "" {
		cred.UserDomainName = auth.DefaultDomain
	}
	if projectRe.MatchString(project) {
		cred.ProjectID = project
	}
	tok, p, err := c.cfg.Issuer.Issue(r.Context(), cred)
	var re *auth.RequestError
	switch {
	case errors.As(err, &re):
		fail(re.Msg)
		return
	case errors.Is(err, auth.ErrUnauthorized):
		fail("The user, the password or the project is wrong.")
		return
	case err != nil:
		c.cfg.Log.Error("console: sign in", "err", err)
		fail("Signing in failed; try again later.")
		return
	}
	c.cfg.Log.Info("console: signed in", "user_id", p.UserID, "project_id", p.ProjectID, "token_audit_id", p.TokenID)
	c.setCookie(w, r, cookieName, tok)
	http.Redirect(w, r, "/console/servers", http.StatusSeeOther)
}

// signout revokes the token (builtin) and clears the cookie.
func (c *Console) signout(w http.ResponseWriter, r *http.Request, s *session) {
	if rv, ok := c.cfg.Issuer.(interface {
		Revoke(ctx context.Context, token string) error
	}); ok {
		if err := rv.Revoke(r.Context(), s.cookie); err != nil && !errors.Is(err, auth.ErrInvalidToken) {
			c.cfg.Log.Error("console: revoke on sign out", "err", err)
		}
	}
	c.clearCookie(w, r, cookieName)
	c.clearCookie(w, r, projectCookie)
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
}
