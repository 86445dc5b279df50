package api

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestKeptClonesRefusals: malformed kept-clone requests are refused with
// CSBS.9001 naming the parameter, and with authentication on a token
// without the admin role may neither list nor drop (403) — all before the
// service is asked.
func TestKeptClonesRefusals(t *testing.T) {
	open, authed, member := adminRouteServers(t)

	for _, c := range []struct {
		name, method, query string
		srv                 *Server
		token               string
		status              int
		want                string // in the body
	}{
		{"all_tenants not a bool", "GET", "all_tenants=maybe", open, "", 400, "all_tenants"},
		{"empty server_id", "GET", "server_id=", open, "", 400, "server_id"},
		{"server_id twice", "DELETE", "server_id=a&server_id=b", open, "", 400, "server_id"},
		{"volume_id too long", "DELETE", "volume_id=" + strings.Repeat("v", 256), open, "", 400, "volume_id"},
		{"member may not list", "GET", "", authed, member, 403, "admin role"},
		{"member may not drop", "DELETE", "server_id=s1", authed, member, 403, "admin role"},
		{"no token", "DELETE", "", authed, "", 401, "APIGW.0301"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, "/v1/p1/kept_clones?"+c.query, nil)
			if c.token != "" {
				req.Header.Set("X-Auth-Token", c.token)
			}
			rec := httptest.NewRecorder()
			c.srv.ServeHTTP(rec, req)
			if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.want) {
				t.Fatalf("%d %s; want %d naming %q", rec.Code, rec.Body, c.status, c.want)
			}
		})
	}
}
