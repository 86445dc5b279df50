package api

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestVerifyRefusals: malformed verification requests are refused with
// CSBS.9001 naming the field, and with authentication on a token without
// the admin role may not verify (403) — all before the service is asked.
func TestVerifyRefusals(t *testing.T) {
	open, authed, member := adminRouteServers(t)

	for _, c := range []struct {
		name, method, query, body string
		srv                       *Server
		token                     string
		status                    int
		want                      string // in the body
	}{
		{"max_age not a duration", "POST", "", `{"verification": {"max_age": "weekly"}}`, open, "", 400, "max_age"},
		{"negative max_age", "POST", "", `{"verification": {"max_age": "-1h"}}`, open, "", 400, "max_age"},
		{"ids not a list", "POST", "", `{"verification": {"checkpoint_item_ids": "a"}}`, open, "", 400, "checkpoint_item_ids"},
		{"empty id", "POST", "", `{"verification": {"checkpoint_item_ids": [""]}}`, open, "", 400, "checkpoint_item_ids"},
		{"ids with all_tenants", "POST", "all_tenants=true", `{"verification": {"checkpoint_item_ids": ["a"]}}`, open, "", 400, "checkpoint_item_ids"},
		{"all_tenants not a bool", "POST", "all_tenants=maybe", ``, open, "", 400, "all_tenants"},
		{"not JSON", "POST", "", `{"verification"`, open, "", 400, "CSBS.9001"},
		{"list: damaged not a bool", "GET", "damaged=maybe", ``, open, "", 400, "damaged"},
		{"member may not verify", "POST", "", ``, authed, member, 403, "admin role"},
		{"member may not list all tenants", "GET", "all_tenants=true", ``, authed, member, 403, "admin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, "/v1/p1/verifications?"+c.query, strings.NewReader(c.body))
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
