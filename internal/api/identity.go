package api

import (
	"errors"
	"net/http"

	"github.com/csbs/csbs/internal/auth"
)

// The Keystone v3 subset of the builtin identity: what OpenStack clients
// call to get a token and to find csbs in its catalog.

// identityRoutes registers /v3 in builtin mode. Its errors have Keystone's
// shape, {"error": {"code", "title", "message"}}, since Keystone clients
// read them.
func (s *Server) identityRoutes() {
	if s.ident == nil || s.ident.iss == nil {
		return
	}
	s.mux.HandleFunc("GET /v3", s.versionV3)
	s.mux.HandleFunc("GET /v3/", s.versionV3)
	s.mux.HandleFunc("POST /v3/auth/tokens", s.issueToken)
	s.mux.HandleFunc("GET /v3/auth/tokens", s.checkToken)
	s.mux.HandleFunc("HEAD /v3/auth/tokens", s.checkToken)
	s.mux.HandleFunc("DELETE /v3/auth/tokens", s.revokeToken)
}

// keystoneTime is how Keystone writes times.
const keystoneTime = "2006-01-02T15:04:05.000000Z"

func keystoneError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code": status, "title": http.StatusText(status), "message": msg}})
}

func (s *Server) versionV3(w http.ResponseWriter, r *http.Request) {
	base := s.baseURL(r)
	writeJSON(w, http.StatusOK, map[string]any{"version": map[string]any{
		"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
		"links":       []map[string]string{{"rel": "self", "href": base + "/v3/"}},
		"media-types": []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}},
	}})
}

// authRequest is the body of POST /v3/auth/tokens (password method).
type authRequest struct {
	Auth *struct {
		Identity *struct {
			Methods  []string `json:"methods"`
			Password *struct {
				User *struct {
					ID       string   `json:"id"`
					Name     string   `json:"name"`
					Password string   `json:"password"`
					Domain   *nameRef `json:"domain"`
				} `json:"user"`
			} `json:"password"`
		} `json:"identity"`
		Scope *struct {
			Project *struct {
				ID     string   `json:"id"`
				Name   string   `json:"name"`
				Domain *nameRef `json:"domain"`
			} `json:"project"`
			Domain *nameRef `json:"domain"`
			System any      `json:"system"`
		} `json:"scope"`
	} `json:"auth"`
}

type nameRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// credentials reads a Keystone v3 password authentication request.
func credentials(r *http.Request) (auth.Credentials, error) {
	var c auth.Credentials
	var req authRequest
	if err := decode(r, &req); err != nil {
		return c, err
	}
	a := req.Auth
	if a == nil || a.Identity == nil {
		return c, &auth.RequestError{Msg: "auth.identity is required"}
	}
	pw := a.Identity.Password
	if len(a.Identity.Methods) != 1 || a.Identity.Methods[0] != "password" || pw == nil || pw.User == nil {
		return c, &auth.RequestError{Msg: `auth.identity: only the password method is supported: "methods": ["password"] with password.user`}
	}
	u := pw.User
	c.UserID, c.UserName, c.Password = u.ID, u.Name, u.Password
	if u.Domain != nil {
		c.UserDomainID, c.UserDomainName = u.Domain.ID, u.Domain.Name
	}
	if sc := a.Scope; sc != nil {
		if sc.Domain != nil && sc.Project == nil && sc.System == nil {
			// The cloud's Terraform provider asks for a domain token too.
			c.DomainScope = true
			c.ScopeDomainID, c.ScopeDomainName = sc.Domain.ID, sc.Domain.Name
			return c, nil
		}
		if sc.Project == nil || sc.Domain != nil || sc.System != nil {
			return c, &auth.RequestError{Msg: "auth.scope: give one scope: scope.project (id, or name and domain) or scope.domain (id or name)"}
		}
		c.ProjectID, c.ProjectName = sc.Project.ID, sc.Project.Name
		if d := sc.Project.Domain; d != nil {
			c.ProjectDomainID, c.ProjectDomainName = d.ID, d.Name
		}
		if c.ProjectID == "" && c.ProjectName == "" {
			return c, &auth.RequestError{Msg: "auth.scope.project: give id, or name and domain"}
		}
	}
	return c, nil
}

// issueToken is POST /v3/auth/tokens: 201, the token in X-Subject-Token.
func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) {
	c, err := credentials(r)
	if err != nil {
		keystoneError(w, http.StatusBadRequest, err.Error())
		return
	}
	tok, p, err := s.ident.iss.Issue(r.Context(), c)
	var re *auth.RequestError
	switch {
	case errors.As(err, &re):
		keystoneError(w, http.StatusBadRequest, re.Msg)
		return
	case errors.Is(err, auth.ErrUnauthorized):
		s.log.Info("authentication refused", "request_id", w.Header().Get("X-Request-Id"), "user", truncate(c.UserName+c.UserID, 64))
		keystoneError(w, http.StatusUnauthorized, "The request you have made requires authentication.")
		return
	case err != nil:
		s.identityFailure(w, err)
		return
	}
	s.log.Info("token issued", "request_id", w.Header().Get("X-Request-Id"), "user_id", p.UserID, "project_id", p.ProjectID, "token_audit_id", p.TokenID)
	w.Header().Set("X-Subject-Token", tok)
	writeJSON(w, http.StatusCreated, s.tokenDoc(r, p))
}

// checkToken is GET (and HEAD) /v3/auth/tokens: the document of the token
// in X-Subject-Token, asked with a valid X-Auth-Token of its own user or an
// admin. A subject that is not valid is 404, as in Keystone.
func (s *Server) checkToken(w http.ResponseWriter, r *http.Request) {
	subj, p, ok := s.subject(w, r)
	if !ok {
		return
	}
	w.Header().Set("X-Subject-Token", subj)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	writeJSON(w, http.StatusOK, s.tokenDoc(r, p))
}

// revokeToken is DELETE /v3/auth/tokens: the token in X-Subject-Token is
// revoked at once; 204.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	subj, p, ok := s.subject(w, r)
	if !ok {
		return
	}
	err := s.ident.iss.Revoke(r.Context(), subj)
	if errors.Is(err, auth.ErrInvalidToken) {
		keystoneError(w, http.StatusNotFound, "Could not find token.")
		return
	}
	if err != nil {
		s.identityFailure(w, err)
		return
	}
	s.log.Info("token revoked", "request_id", w.Header().Get("X-Request-Id"), "user_id", p.UserID, "token_audit_id", p.TokenID)
	w.WriteHeader(http.StatusNoContent)
}

// subject authenticates the caller (X-Auth-Token) and returns the subject
// token (X-Subject-Token) and its principal, or writes the refusal.
func (s *Server) subject(w http.ResponseWriter, r *http.Request) (string, *auth.Principal, bool) {
	caller, err := s.ident.v.Validate(r.Context(), r.Header.Get("X-Auth-Token"))
	if errors.Is(err, auth.ErrInvalidToken) {
		keystoneError(w, http.StatusUnauthorized, "The request you have made requires authentication.")
		return "", nil, false
	}
	if err != nil {
		s.identityFailure(w, err)
		return "", nil, false
	}
	subj := r.Header.Get("X-Subject-Token")
	if subj == "" {
		keystoneError(w, http.StatusBadRequest, "X-Subject-Token header is required")
		return "", nil, false
	}
	p, err := s.ident.v.Validate(r.Context(), subj)
	if errors.Is(err, auth.ErrInvalidToken) {
		keystoneError(w, http.StatusNotFound, "Could not find token.")
		return "", nil, false
	}
	if err != nil {
		s.identityFailure(w, err)
		return "", nil, false
	}
	if p.UserID != caller.UserID && !caller.Admin() {
		keystoneError(w, http.StatusForbidden, "You are not authorized to perform the requested action: only the token's own user or an admin may.")
		return "", nil, false
	}
	return subj, p, true
}

func (s *Server) identityFailure(w http.ResponseWriter, err error) {
	id := w.Header().Get("X-Request-Id")
	s.log.Error("identity request failed", "request_id", id, "err", err)
	keystoneError(w, http.StatusInternalServerError, "request failed; see the service log for request "+id)
}

// tokenDoc is Keystone's token document for p, with the catalog.
func (s *Server) tokenDoc(r *http.Request, p *auth.Principal) map[string]any {
	base := s.baseURL(r)
	roles := make([]map[string]string, 0, len(p.Roles))
	for _, name := range p.Roles {
		roles = append(roles, map[string]string{"id": auth.RoleID(name), "name": name})
	}
	endpoint := func(svc, url string) map[string]any {
		return map[string]any{
			"id": auth.RoleID("endpoint:" + svc + ":" + url)[:32], "interface": "public",
			"region": s.ident.region, "region_id": s.ident.region, "url": url,
		}
	}
	tok := map[string]any{
		"methods":    p.Methods,
		"expires_at": p.ExpiresAt.UTC().Format(keystoneTime),
		"issued_at":  p.IssuedAt.UTC().Format(keystoneTime),
		"audit_ids":  []string{p.TokenID},
		"is_domain":  false,
		"user": map[string]any{
			"id": p.UserID, "name": p.UserName, "password_expires_at": nil,
			"domain": map[string]string{"id": p.UserDomainID, "name": p.UserDomainName},
		},
		"roles": roles,
	}
	identity := map[string]any{"type": "identity", "name": "keystone", "id": auth.RoleID("service:identity")[:32],
		"endpoints": []map[string]any{endpoint("identity", base+"/v3")}}
	catalog := []map[string]any{identity}
	if p.ProjectID != "" {
		tok["project"] = map[string]any{
			"id": p.ProjectID, "name": p.ProjectName,
			"domain": map[string]string{"id": p.ProjectDomainID, "name": p.ProjectDomainName},
		}
		catalog = append([]map[string]any{{"type": "data-protect", "name": "csbs", "id": auth.RoleID("service:data-protect")[:32],
			"endpoints": []map[string]any{endpoint("data-protect", base+"/v1/"+p.ProjectID)}}}, catalog...)
	} else {
		// A domain token, as Keystone writes it: the domain instead of a
		// project, and a catalog without project endpoints.
		tok["domain"] = map[string]string{"id": p.ScopeDomainID, "name": p.ScopeDomainName}
	}
	if _, no := r.URL.Query()["nocatalog"]; !no {
		tok["catalog"] = catalog
	}
	return map[string]any{"token": tok}
}
