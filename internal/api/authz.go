package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/csbs/csbs/internal/auth"
	"github.com/csbs/csbs/internal/service"
)

// Codes of authentication refusals. The reference has none for them; these
// are the codes the public cloud's API gateway answers with, which its
// clients already know.
const (
	codeUnauthenticated = "APIGW.0301" // 401: no, bad, expired or revoked token
	codeForbidden       = "APIGW.0302" // 403: the token's project may not do this
	codeUnavailable     = "CSBS.9998"  // 500 in the reference; 503 here: identity unreachable
)

// Option configures a Server.
type Option func(*Server)

// Issuer is the builtin identity: besides validating tokens it issues and
// revokes them, and the API answers /v3/auth/tokens with it.
type Issuer interface {
	auth.Validator
	// Issue authenticates credentials and returns a new token (a secret:
	// never logged) and its principal; see auth.Builtin.Issue.
	Issue(ctx context.Context, c auth.Credentials) (string, *auth.Principal, error)
	// Revoke makes a token invalid; an invalid one is auth.ErrInvalidToken.
	Revoke(ctx context.Context, token string) error
}

// identity is what the server enforces; nil means auth.mode none.
type identity struct {
	v   auth.Validator
	iss Issuer // nil in keystone mode: tokens come from elsewhere
	// region makes the catalog of issued tokens, with Server.baseURL.
	region string
}

// WithAuth makes the server require a valid X-Auth-Token on every
// /v1/{project_id}/… request, of that project (or an admin's). When v is
// an Issuer (builtin mode) the server also answers /v3/auth/tokens, with a
// catalog naming region and the public URL (WithPublicURL).
func WithAuth(v auth.Validator, region string) Option {
	return func(s *Server) {
		id := &identity{v: v, region: region}
		id.iss, _ = v.(Issuer)
		s.ident = id
	}
}

// WithConsole serves the web console h under /console/ (it checks its own
// sessions).
func WithConsole(h http.Handler) Option {
	return func(s *Server) { s.console = h }
}

// WithPublicURL is the base URL clients reach the server at, used in the
// links it returns (catalogs, next pages): behind a proxy that rewrites
// Host it must be set. Empty: the scheme and Host the client used.
func WithPublicURL(u string) Option {
	return func(s *Server) { s.publicURL = strings.TrimSuffix(u, "/") }
}

// Route is an operation of the API: a method and a path pattern of
// net/http (e.g. GET /v1/{project_id}/checkpoint_items/{checkpoint_item_id}).
type Route struct {
	Method  string
	Pattern string
}

// Routes lists every /v1 operation the API serves, so that tests can go
// over all of them (they cover new operations without being told).
func Routes() []Route {
	s := New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	out := make([]Route, 0, len(s.patterns))
	for _, p := range s.patterns {
		m, path, _ := strings.Cut(p, " ")
		out = append(out, Route{Method: m, Pattern: path})
	}
	return out
}

// authorize enforces the identity on r. It returns r carrying the
// principal (auth.FromContext), or nil after writing the refusal:
//   - no token, or one that is not valid: 401;
//   - a token of another project than the URL's, unless admin: 403;
//   - all_tenants=true without admin: 403.
//
// Paths outside /v1/ pass: /v3/auth/tokens checks its own tokens and
// everything else is a 404.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) *http.Request {
	if s.ident == nil {
		return r
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/")
	if !ok {
		return r
	}
	seg, _, _ := strings.Cut(rest, "/")
	project, err := url.PathUnescape(seg)
	if err != nil {
		project = seg
	}
	p, ok := s.principal(w, r)
	if !ok {
		return nil
	}
	switch {
	case p.ProjectID == "":
		s.refuse(w, r, p, http.StatusForbidden, "the token is not scoped to a project; authenticate again with scope.project")
		return nil
	case project != p.ProjectID && !p.Admin():
		s.refuse(w, r, p, http.StatusForbidden, "the token is scoped to another project than "+truncate(project, 70)+"; use a token of that project")
		return nil
	case allTenants(r.URL.Query()) && !p.Admin():
		s.refuse(w, r, p, http.StatusForbidden, "all_tenants=true needs the admin role")
		return nil
	}
	return r.WithContext(auth.NewContext(r.Context(), p))
}

// principal validates the request's X-Auth-Token, writing the refusal when
// it is missing or not valid.
func (s *Server) principal(w http.ResponseWriter, r *http.Request) (*auth.Principal, bool) {
	tok := r.Header.Get("X-Auth-Token")
	if tok == "" {
		s.unauthenticated(w, r, "no X-Auth-Token header; get a token at POST /v3/auth/tokens")
		return nil, false
	}
	p, err := s.ident.v.Validate(r.Context(), tok)
	if errors.Is(err, auth.ErrInvalidToken) {
		s.unauthenticated(w, r, auth.ErrInvalidToken.Error())
		return nil, false
	}
	if err != nil {
		id := w.Header().Get("X-Request-Id")
		s.log.Error("token validation failed", "request_id", id, "err", err)
		writeError(w, &service.Error{Code: codeUnavailable, Status: http.StatusServiceUnavailable,
			Msg: "the identity service could not validate the token; try again later (request " + id + ")"})
		return nil, false
	}
	return p, true
}

func (s *Server) unauthenticated(w http.ResponseWriter, r *http.Request, msg string) {
	if u := s.identityURL(r); u != "" {
		w.Header().Set("WWW-Authenticate", `Keystone uri="`+u+`"`)
	}
	s.log.Debug("request refused", "request_id", w.Header().Get("X-Request-Id"), "status", 401, "reason", msg)
	writeError(w, &service.Error{Code: codeUnauthenticated, Status: http.StatusUnauthorized, Msg: msg})
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, p *auth.Principal, status int, msg string) {
	s.log.Debug("request refused", "request_id", w.Header().Get("X-Request-Id"), "status", status,
		"user_id", p.UserID, "project_id", p.ProjectID, "token_audit_id", p.TokenID, "path", r.URL.Path)
	writeError(w, &service.Error{Code: codeForbidden, Status: status, Msg: msg})
}

// identityURL is where clients authenticate: csbs itself in builtin mode.
func (s *Server) identityURL(r *http.Request) string {
	if s.ident.iss == nil {
		return ""
	}
	return s.baseURL(r) + "/v3"
}

// baseURL is the configured public URL, or the scheme and host the
// client used.
func (s *Server) baseURL(r *http.Request) string {
	if s.publicURL != "" {
		return s.publicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	return scheme + "://" + r.Host
}

// allTenants reports whether the query asks for all tenants. A value that
// is not a boolean is left to the operation to refuse.
func allTenants(q url.Values) bool {
	for _, v := range q["all_tenants"] {
		if b, err := strconv.ParseBool(v); err == nil && b {
			return true
		}
	}
	return false
}
