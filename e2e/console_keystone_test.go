package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConsoleKeystone: with auth.mode keystone the console signs users in
// at Keystone (the stand-in, not a real Keystone): a wrong password or a
// project the user is not a member of is refused; the session works on
// the user's project; signing out revokes the token at Keystone and the
// old cookie no longer works.
func TestConsoleKeystone(t *testing.T) {
	ks := newKeystoneStandIn(t)
	ks.mu.Lock()
	ks.passwords["carol"] = standInUser{password: "carol-pw-1234", project: project, roles: []string{"member"}}
	ks.mu.Unlock()
	cfg := filepath.Join(t.TempDir(), "csbs.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("auth:\n  mode: keystone\n  keystone_url: %s/v3\n  keystone_user: %s\n  keystone_password: %s\n", ks.srv.URL, ksServiceUser, ksServicePW)), 0o600)
	e := newEnv(t, "--config", cfg)
	e.addServer(serverID, project, "ACTIVE", 4*mib)
	e.start()

	c := browser(t)
	signin := e.base + "/console/signin"
	for _, tc := range []struct{ name, password, project string }{
		{"wrong password", "wrong", project},
		{"not a member of the project", "carol-pw-1234", "0c2a2ef0d1b34ad4a6c1e01fd0ae2a3c"},
	} {
		if resp, body := post(t, c, signin, url.Values{"user": {"carol"}, "password": {tc.password}, "project": {tc.project}}); resp.StatusCode != 401 || !strings.Contains(body, "wrong") {
			t.Errorf("%s: %d; want 401 saying what may be wrong", tc.name, resp.StatusCode)
		}
	}
	if resp, body := post(t, c, signin, url.Values{"user": {"carol"}, "password": {"carol-pw-1234"}}); resp.StatusCode != 401 || !strings.Contains(body, "project") {
		t.Errorf("no project: %d; want 401 asking for the project", resp.StatusCode)
	}
	resp, _ := post(t, c, signin, url.Values{"user": {"carol"}, "password": {"carol-pw-1234"}, "project": {project}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in at Keystone: %d", resp.StatusCode)
	}
	_, body := get(t, c, e.base+"/console/servers")
	m := csrfRe.FindStringSubmatch(body)
	if m == nil || !strings.Contains(body, project) || !strings.Contains(body, "srv-"+serverID[:4]) {
		t.Fatalf("the servers page after a Keystone sign-in lacks the project or its server:\n%s", body)
	}
	ks.mu.Lock()
	issued := len(ks.users)
	ks.mu.Unlock()

	old := c.Jar.Cookies(mustURL(e.base + "/console/"))
	if resp, _ := post(t, c, e.base+"/console/signout", url.Values{"csrf": {m[1]}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	ks.mu.Lock()
	left := len(ks.users)
	ks.mu.Unlock()
	if left != issued-1 {
		t.Errorf("sign-out did not revoke the token at Keystone (%d tokens before, %d after)", issued, left)
	}
	replay := browser(t)
	replay.Jar.SetCookies(mustURL(e.base+"/console/"), old)
	if resp, _ := get(t, replay, e.base+"/console/servers"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/signin" {
		t.Errorf("the session after sign-out: %d %s, want back to sign-in", resp.StatusCode, resp.Header.Get("Location"))
	}
}
