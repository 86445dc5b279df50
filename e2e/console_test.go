package e2e

import (
	"fmt"
	"github.com/csbs/csbs/internal/schedule"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// consoleEnv starts csbs with builtin identity: alice in project, bob in
// projB, each with a server.
func consoleEnv(t *testing.T) (*env, []string) {
	t.Helper()
	const projB = "0c2a2ef0d1b34ad4a6c1e01fd0ae2a3c"
	cfg := filepath.Join(t.TempDir(), "csbs.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`auth:
  mode: builtin
  users:
    - {name: alice, password: alice-pw-1234, projects: [{id: %s, name: eu-de_a, roles: [member]}]}
    - {name: bob, password: bob-pw-1234, projects: [{id: %s, name: eu-de_b, roles: [member]}]}
    - {name: root, password: root-pw-1234, projects: [{id: %s, name: ops, roles: [admin]}]}
`, project, projB, projAdmin)), 0o600)
	e := newEnv(t, "--config", cfg)
	paths := e.addServer(serverID, project, "ACTIVE", 8*mib)
	e.addServer(newUUID(), projB, "ACTIVE", 4*mib)
	e.start()
	return e, paths
}

// browser is a cookie-keeping HTTP client that does not follow redirects.
func browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// TestConsoleHTTP: sign-in with the builtin identity (a wrong password
// refused), the session cookie's attributes and the security headers,
// back up through the servers page (refused without the CSRF token), a
// user of another project sees nothing of it, sign-out revokes the
// session.
func TestConsoleHTTP(t *testing.T) {
	e, paths := consoleEnv(t)
	c := browser(t)
	if resp, _ := get(t, c, e.base+"/console/"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/signin" {
		t.Fatalf("/console/ without a session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := get(t, c, e.base+"/console/signin")
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("sign-in page: %d, CSP %q", resp.StatusCode, csp)
	}
	if strings.Contains(body, "<script>") {
		t.Errorf("the sign-in page has an inline script")
	}
	if resp, body := post(t, c, e.base+"/console/signin", url.Values{"user": {"alice"}, "password": {"wrong"}}); resp.StatusCode != 401 || !strings.Contains(body, "wrong") {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}
	resp, _ = post(t, c, e.base+"/console/signin", url.Values{"user": {"alice"}, "password": {"alice-pw-1234"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	ck := resp.Cookies()
	if len(ck) != 1 || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Path != "/console/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path /console/", ck)
	}
	_, body = get(t, c, e.base+"/console/servers")
	m := csrfRe.FindStringSubmatch(body)
	if !strings.Contains(body, "srv-"+serverID[:4]) || !strings.Contains(body, "Back up now") || m == nil {
		t.Fatalf("servers page lacks the server or its Back up now form:\n%s", body)
	}
	if strings.Contains(body, "srv-0c2a") {
		t.Errorf("the servers page of project A shows project B's server")
	}

	// The API, with alice's token, to check what the console did.
	tok, _ := login(t, http.DefaultClient, e.base, passwordAuth(byName("alice", "Default", "alice-pw-1234"), nil))
	count := func() string {
		return string(call(t, http.DefaultClient, "GET", e.base+"/v1/"+project+"/checkpoint_items/count", tok, nil).body)
	}
	item := func(id string) string {
		return string(call(t, http.DefaultClient, "GET", e.base+"/v1/"+project+"/checkpoint_items/"+id, tok, nil).body)
	}

	// A forged form (no CSRF token) changes nothing.
	before := count()
	if resp, _ := post(t, c, e.base+"/console/servers/"+serverID+"/backup", url.Values{"name": {"forged"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("backup without a CSRF token: %d, want 403", resp.StatusCode)
	}
	if n := count(); n != before {
		t.Errorf("a forged form made a backup (%s → %s)", before, n)
	}
	resp, _ = post(t, c, e.base+"/console/servers/"+serverID+"/backup", url.Values{"name": {"from-console"}, "csrf": {m[1]}})
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/backups/") {
		t.Fatalf("back up now: %d %s", resp.StatusCode, loc)
	}
	id := strings.TrimPrefix(loc, "/console/backups/")
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(item(id), `"status":"available"`); {
		if time.Now().After(deadline) {
			t.Fatalf("the console's backup did not become available: %s", item(id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, body := get(t, c, e.base+loc); !strings.Contains(body, "from-console") || !strings.Contains(body, "available") {
		t.Errorf("backup page:\n%s", body)
	}
	if _, body := get(t, c, e.base+loc+"/progress"); !strings.Contains(body, `"progress":100`) || !strings.Contains(body, `"status":"available"`) {
		t.Errorf("progress: %s", body)
	}

	// Restore it through the console over a changed disk: the mapping is
	// checked, the disk comes back byte for byte.
	want := fileHash(t, paths[0])
	scribble(t, paths[0])
	_, body = get(t, c, e.base+loc+"/restore")
	if !strings.Contains(body, `name="disk-`) || !strings.Contains(body, "Restore") {
		t.Fatalf("restore page:\n%s", body)
	}
	diskField := regexp.MustCompile(`name="(disk-[^"]+)"`).FindStringSubmatch(body)[1]
	bad := url.Values{"csrf": {m[1]}, "server": {serverID}, diskField: {"no-such-disk"}}
	if resp, _ := post(t, c, e.base+loc+"/restore", bad); !strings.Contains(resp.Header.Get("Location"), "flash=") {
		t.Errorf("a restore to a disk the server does not have: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	vol := regexp.MustCompile(`(?s)name="disk-[^"]+">.*?<option value="([^"]+)"`).FindStringSubmatch(body)[1]
	resp, _ = post(t, c, e.base+loc+"/restore", url.Values{"csrf": {m[1]}, "server": {serverID}, diskField: {vol}})
	if resp.StatusCode != http.StatusSeeOther || strings.Contains(resp.Header.Get("Location"), "/restore") {
		t.Fatalf("restore: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	for deadline := time.Now().Add(60 * time.Second); fileHash(t, paths[0]) != want; {
		if time.Now().After(deadline) {
			t.Fatal("the disk restored through the console differs from the backup")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, body := get(t, c, e.base+"/console/jobs"); !strings.Contains(body, "restore") || !strings.Contains(body, "protect") {
		t.Errorf("operation logs page lacks the jobs:\n%s", body)
	}
	if _, body := get(t, c, e.base+"/console/quotas"); !strings.Contains(body, "backups") || !strings.Contains(body, "<meter") {
		t.Errorf("quotas page:\n%s", body)
	}

	// The overview counts the backup and charts today.
	if _, body := get(t, c, e.base+"/console/overview"); !strings.Contains(body, "(1 available)") || !strings.Contains(body, "<svg") ||
		!strings.Contains(body, time.Now().UTC().Format("2006-01-02")+": 1 available, 0 failed") {
		t.Errorf("overview:\n%s", body)
	}

	// Tags on the backup, through the console: added, shown, refused
	// beyond the rules, removed; the API sees the same tags.
	resp, _ = post(t, c, e.base+loc+"/tags", url.Values{"csrf": {m[1]}, "key": {"env"}, "value": {"prod"}})
	if _, body := get(t, c, e.base+loc); !strings.Contains(resp.Header.Get("Location"), "Tag+added") || !strings.Contains(body, "<code>env</code>") {
		t.Errorf("add tag: %s", resp.Header.Get("Location"))
	}
	if !strings.Contains(item(id), `"key":"env","value":"prod"`) {
		t.Errorf("the API does not see the console's tag: %s", item(id))
	}
	if resp, _ := post(t, c, e.base+loc+"/tags", url.Values{"csrf": {m[1]}, "key": {"bad key!"}, "value": {"x"}}); !strings.Contains(resp.Header.Get("Location"), "CSBS.") {
		t.Errorf("a bad tag key: %s", resp.Header.Get("Location"))
	}
	post(t, c, e.base+loc+"/tags/delete", url.Values{"csrf": {m[1]}, "key": {"env"}})
	if strings.Contains(item(id), `"key":"env"`) {
		t.Errorf("tag not removed: %s", item(id))
	}

	// A policy from the schedule builder: the rule it writes, and the next
	// ten fire times it shows are the scheduler's own.
	form := url.Values{"csrf": {m[1]}, "name": {"nightly"}, "day-MO": {"on"}, "day-WE": {"on"}, "time": {"03:30"},
		"enabled": {"on"}, "keep": {"count"}, "max_backups": {"5"}, "server": {serverID}}
	resp, _ = post(t, c, e.base+"/console/policies", form)
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "every+MO%2C+WE+at+03%3A30+UTC") {
		t.Fatalf("create policy: %d %s", resp.StatusCode, loc)
	}
	_, body = get(t, c, e.base+"/console/policies")
	sched, err := schedule.Parse(schedule.Pattern("FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=3;BYMINUTE=30"))
	if err != nil {
		t.Fatal(err)
	}
	var fires []string
	for at := time.Now(); len(fires) < 10; {
		at = sched.Next(at)
		fires = append(fires, at.UTC().Format(time.RFC3339))
	}
	var shown []string
	for _, m := range regexp.MustCompile(`<time datetime="([^"]+)"`).FindAllStringSubmatch(body, -1) {
		shown = append(shown, m[1])
	}
	if strings.Join(shown, " ") != strings.Join(fires, " ") || !strings.Contains(body, "keeps the newest 5 automatic backups") {
		t.Errorf("policy page fire times %v, the scheduler's %v; retention shown: %v", shown, fires, strings.Contains(body, "newest 5"))
	}
	if resp, body := post(t, c, e.base+"/console/policies", url.Values{"csrf": {m[1]}, "name": {"no days"}, "time": {"03:30"}}); resp.StatusCode != 400 || !strings.Contains(body, "Choose at least one day") || !strings.Contains(body, `value="no days"`) {
		t.Errorf("a policy without days: %d; want 400 with the form as typed and why", resp.StatusCode)
	}

	// Editing the policy: the form shows it as it is; saving changes its
	// schedule, retention (with weeks kept) and servers, as the API sees.
	pm := regexp.MustCompile(`href="/console/policies/([0-9a-f-]+)/edit"`).FindStringSubmatch(body)
	if pm == nil {
		t.Fatal("the policies page has no edit link")
	}
	editURL, saveURL := e.base+"/console/policies/"+pm[1]+"/edit", e.base+"/console/policies/"+pm[1]
	_, body = get(t, c, editURL)
	for _, want := range []string{`id="day-MO" name="day-MO" checked`, `id="day-WE" name="day-WE" checked`, `value="03:30"`, `name="max_backups" type="number" min="1" max="99999" size="5" value="5"`, `value="` + serverID + `" checked`} {
		if !strings.Contains(body, want) {
			t.Errorf("the edit form does not show the policy as it is: no %s", want)
		}
	}
	if strings.Contains(body, `id="day-TU" name="day-TU" checked`) {
		t.Error("the edit form ticks a day the policy does not run on")
	}
	edit := url.Values{"csrf": {m[1]}, "name": {"nightly"}, "day-TU": {"on"}, "time": {"22:15"}, "enabled": {"on"},
		"keep": {"days"}, "retention_days": {"30"}, "week_backups": {"4"}, "timezone": {"UTC+02:00"}, "server": {serverID}}
	if resp, _ := post(t, c, saveURL, edit); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("save policy: %d", resp.StatusCode)
	}
	pol := string(call(t, http.DefaultClient, "GET", e.base+"/v1/"+project+"/policies/"+pm[1], tok, nil).body)
	for _, want := range []string{`BYDAY=TU;BYHOUR=22;BYMINUTE=15`, `"retention_duration_days":30`, `"week_backups":4`, `"timezone":"UTC+02:00"`} {
		if !strings.Contains(pol, want) {
			t.Errorf("after the edit the API's policy lacks %s: %s", want, pol)
		}
	}
	if strings.Contains(pol, `"max_backups"`) {
		t.Errorf("the edit kept max_backups: %s", pol)
	}
	if _, body := get(t, c, e.base+"/console/servers"); !strings.Contains(body, `<a href="/console/policies/`+pm[1]+`/edit">nightly</a>`) {
		t.Error("the servers page does not name the policy the server is bound to")
	}
	if _, body := get(t, c, e.base+"/console/policies"); !strings.Contains(body, "keeps automatic backups for 30 days, and the last backup of each of the last 4 weeks") {
		t.Error("the policies page does not say the new retention in words")
	}
	edit.Set("week_backups", "101")
	if resp, body := post(t, c, saveURL, edit); resp.StatusCode != 400 || !strings.Contains(body, "week_backups") || !strings.Contains(body, `value="101"`) {
		t.Errorf("week_backups 101: %d; want 400 naming the field, with the form as typed", resp.StatusCode)
	}

	// Bob (project B) sees nothing of alice's backup through any URL.
	cb := browser(t)
	post(t, cb, e.base+"/console/signin", url.Values{"user": {"bob"}, "password": {"bob-pw-1234"}})
	for _, u := range []string{loc, loc + "/progress", loc + "/restore"} {
		if resp, body := get(t, cb, e.base+u); resp.StatusCode != 404 || strings.Contains(body, "from-console") {
			t.Errorf("bob GET %s: %d", u, resp.StatusCode)
		}
	}
	if _, body := get(t, cb, e.base+"/console/backups"); strings.Contains(body, "from-console") {
		t.Errorf("bob's backup list shows alice's backup")
	}
	if _, body := get(t, cb, e.base+"/console/policies"); strings.Contains(body, "nightly") {
		t.Errorf("bob's policy list shows alice's policy")
	}
	if resp, body := get(t, cb, editURL); resp.StatusCode != 404 || strings.Contains(body, "nightly") {
		t.Errorf("bob GET alice's policy edit page: %d", resp.StatusCode)
	}
	_, body = get(t, cb, e.base+"/console/servers")
	bm := csrfRe.FindStringSubmatch(body)
	if resp, _ := post(t, cb, e.base+loc+"/delete", url.Values{"csrf": {bm[1]}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("bob delete: %d", resp.StatusCode)
	}
	if it := item(id); !strings.Contains(it, `"status":"available"`) {
		t.Errorf("bob's delete touched alice's backup: %s", it)
	}
	bobEdit := url.Values{"csrf": {bm[1]}, "name": {"bob's now"}, "day-SU": {"on"}, "time": {"01:00"}, "keep": {"all"}}
	if resp, _ := post(t, cb, saveURL, bobEdit); resp.StatusCode != 404 {
		t.Errorf("bob POST to alice's policy: %d, want 404", resp.StatusCode)
	}
	if pol := string(call(t, http.DefaultClient, "GET", e.base+"/v1/"+project+"/policies/"+pm[1], tok, nil).body); !strings.Contains(pol, `"name":"nightly"`) {
		t.Errorf("bob's edit touched alice's policy: %s", pol)
	}

	// An admin switches to alice's project and sees her backup; bob may
	// not switch, and a forged project cookie changes nothing for him.
	cr := browser(t)
	post(t, cr, e.base+"/console/signin", url.Values{"user": {"root"}, "password": {"root-pw-1234"}})
	_, body = get(t, cr, e.base+"/console/backups")
	rm := csrfRe.FindStringSubmatch(body)
	if rm == nil || strings.Contains(body, "from-console") || !strings.Contains(body, `action="/console/project"`) {
		t.Fatalf("the admin's own project: no switch form, or alice's backup shown")
	}
	if resp, _ := post(t, cr, e.base+"/console/project", url.Values{"csrf": {rm[1]}, "project": {project}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("admin switch: %d", resp.StatusCode)
	}
	if _, body := get(t, cr, e.base+"/console/backups"); !strings.Contains(body, "from-console") || !strings.Contains(body, projAdmin) {
		t.Errorf("the admin switched to alice's project does not see her backup (or no longer shows his own project)")
	}
	if resp, _ := post(t, cb, e.base+"/console/project", url.Values{"csrf": {bm[1]}, "project": {project}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob switching projects: %d, want 403", resp.StatusCode)
	}
	cb.Jar.SetCookies(mustURL(e.base+"/console/"), []*http.Cookie{{Name: "csbs_project", Value: project, Path: "/console/"}})
	if _, body := get(t, cb, e.base+"/console/backups"); strings.Contains(body, "from-console") {
		t.Errorf("a forged project cookie let bob see alice's backups")
	}

	// An expired session goes back to sign-in.
	_, doc := login(t, http.DefaultClient, e.base, passwordAuth(byName("alice", "Default", "alice-pw-1234"), nil))
	past := time.Now().Add(-2 * time.Hour).UnixMicro()
	expired := signToken(t, filepath.Join(e.dataDir, "token.key"), map[string]any{"i": "expired-console", "u": doc.Token.User.ID,
		"p": project, "r": []string{"member"}, "t": past, "e": past + time.Hour.Microseconds()})
	stale := browser(t)
	stale.Jar.SetCookies(mustURL(e.base+"/console/"), []*http.Cookie{{Name: "csbs_session", Value: expired, Path: "/console/"}})
	if resp, _ := get(t, stale, e.base+"/console/backups"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/signin" {
		t.Errorf("an expired session: %d %s, want back to sign-in", resp.StatusCode, resp.Header.Get("Location"))
	}

	// Sign out: the token is revoked; the old cookie no longer works.
	old := c.Jar.Cookies(mustURL(e.base + "/console/"))
	if resp, _ := post(t, c, e.base+"/console/signout", url.Values{"csrf": {m[1]}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	replay := browser(t)
	replay.Jar.SetCookies(mustURL(e.base+"/console/"), old)
	if resp, _ := get(t, replay, e.base+"/console/servers"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/signin" {
		t.Errorf("the session after sign-out: %d %s, want back to sign-in", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
