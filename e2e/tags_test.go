package e2e

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// tagList decodes {"tags": [{"key", "value"}]} into "k=v" strings, sorted.
func tagList(t *testing.T, r resp) []string {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("tags: %d %s", r.status, r.body)
	}
	var out struct {
		Tags []struct{ Key, Value string } `json:"tags"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil || out.Tags == nil {
		t.Fatalf("tags: %v: %s", err, r.body)
	}
	s := []string{}
	for _, tg := range out.Tags {
		s = append(s, tg.Key+"="+tg.Value)
	}
	slices.Sort(s)
	return s
}

// wantError checks a refusal's status and error code.
func wantError(t *testing.T, what string, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d: %s", what, r.status, status, r.body)
		return
	}
	var e struct {
		Code string `json:"error_code"`
		Msg  string `json:"error_msg"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Code != code || e.Msg == "" {
		t.Errorf("%s: body %s, want error_code %s and a message", what, r.body, code)
	}
}

func tag(k, v string) map[string]any { return map[string]any{"key": k, "value": v} }

// TestBackupTags runs every tag operation of csbs_backup over HTTP: add,
// overwrite, delete by key, batch create and delete, the tags of a backup
// and of the project, filter and count by every condition, with the
// limits and refusals of the reference.
func TestBackupTags(t *testing.T) {
	e := newEnv(t)
	e.addServer(serverID, project, "ACTIVE", 4*mib)
	otherProject := "0123456789abcdef0123456789abcdef"
	otherServer := newUUID()
	e.addServer(otherServer, otherProject, "ACTIVE", 4*mib)
	e.start()

	backup := func(projectID, server, name string, tags ...map[string]any) string {
		params := map[string]any{"backup_name": name}
		if tags != nil {
			params["tags"] = tags
		}
		_, id := e.protect(projectID, server, params)
		e.waitStatus(projectID, id, 60*time.Second, "available")
		return id
	}
	a := backup(project, serverID, "alpha-web", tag("env", "prod"), tag("tier", "web"))
	b := backup(project, serverID, "beta-db")
	c := backup(project, serverID, "gamma-web", tag("env", "dev"), tag("team", "db"))
	theirs := backup(otherProject, otherServer, "alpha-theirs", tag("env", "prod"))

	base := "/v1/" + project + "/csbs_backup/"
	tagsOf := func(id string) []string { return tagList(t, e.do("GET", base+id+"/tags", nil)) }

	// Tags given at creation are the backup's tags.
	if got := tagsOf(a); !reflect.DeepEqual(got, []string{"env=prod", "tier=web"}) {
		t.Errorf("tags of a: %v", got)
	}
	if got := tagsOf(b); len(got) != 0 {
		t.Errorf("tags of b: %v, want an empty list", got)
	}

	// Add one, spaces trimmed; the same key overwrites.
	for _, v := range []string{" ann ", "bob"} {
		if r := e.do("POST", base+b+"/tags", map[string]any{"tag": tag(" owner ", v)}); r.status != 204 {
			t.Fatalf("add tag: %d %s", r.status, r.body)
		}
	}
	if got := tagsOf(b); !reflect.DeepEqual(got, []string{"owner=bob"}) {
		t.Errorf("tags after add and overwrite: %v", got)
	}
	if it := e.item(project, b); fmt.Sprint(it["tags"]) != "[map[key:owner value:bob]]" {
		t.Errorf("the backup shows tags %v", it["tags"])
	}
	// Delete by key; a missing key is CSBS.7001.
	if r := e.do("DELETE", base+b+"/tags/owner", nil); r.status != 204 {
		t.Fatalf("delete tag: %d %s", r.status, r.body)
	}
	wantError(t, "delete a missing tag", e.do("DELETE", base+b+"/tags/owner", nil), 404, "CSBS.7001")
	if got := tagsOf(b); len(got) != 0 {
		t.Errorf("tags after delete: %v", got)
	}

	// Refusals of add.
	long := strings.Repeat("k", 37)
	for _, tc := range []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"empty key", base + b + "/tags", map[string]any{"tag": tag("  ", "v")}, 400, "CSBS.9001"},
		{"key of 37", base + b + "/tags", map[string]any{"tag": tag(long, "v")}, 400, "CSBS.9001"},
		{"value of 44", base + b + "/tags", map[string]any{"tag": tag("k", strings.Repeat("v", 44))}, 400, "CSBS.9001"},
		{"key with *", base + b + "/tags", map[string]any{"tag": tag("a*b", "v")}, 400, "CSBS.9001"},
		{"value with space inside", base + b + "/tags", map[string]any{"tag": tag("k", "a b")}, 400, "CSBS.9001"},
		{"no value", base + b + "/tags", map[string]any{"tag": map[string]any{"key": "k"}}, 400, "CSBS.9001"},
		{"no tag", base + b + "/tags", map[string]any{}, 400, "CSBS.9001"},
		{"not JSON", base + b + "/tags", "{", 400, "CSBS.9001"},
		{"unknown backup", base + newUUID() + "/tags", map[string]any{"tag": tag("k", "v")}, 404, "CSBS.3001"},
		{"another project's backup", base + theirs + "/tags", map[string]any{"tag": tag("k", "v")}, 404, "CSBS.3001"},
	} {
		wantError(t, "add: "+tc.name, e.do("POST", tc.path, tc.body), tc.status, tc.code)
	}
	wantError(t, "tags of another project's backup", e.do("GET", base+theirs+"/tags", nil), 404, "CSBS.3001")
	wantError(t, "delete a tag of another project's backup", e.do("DELETE", base+theirs+"/tags/env", nil), 404, "CSBS.3001")
	if got := tagsOf(b); len(got) != 0 {
		t.Errorf("refused adds changed the tags: %v", got)
	}
	// 36 and 43 characters are allowed; an empty value too.
	if r := e.do("POST", base+b+"/tags", map[string]any{"tag": tag(long[:36], strings.Repeat("v", 43))}); r.status != 204 {
		t.Errorf("add a tag of the longest key and value: %d %s", r.status, r.body)
	}
	if r := e.do("POST", base+b+"/tags", map[string]any{"tag": tag("empty", "")}); r.status != 204 {
		t.Errorf("add a tag with an empty value: %d %s", r.status, r.body)
	}

	// Batch create: up to 10 tags in all; more is CSBS.7000 and changes nothing.
	action := func(id, act string, tags ...map[string]any) resp {
		return e.do("POST", base+id+"/tags/action", map[string]any{"action": act, "tags": tags})
	}
	var eight []map[string]any
	for i := range 8 {
		eight = append(eight, tag(fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)))
	}
	if r := action(b, "create", eight...); r.status != 204 {
		t.Fatalf("batch create: %d %s", r.status, r.body)
	}
	if got := tagsOf(b); len(got) != 10 {
		t.Fatalf("after batch create: %d tags %v, want 10", len(got), got)
	}
	wantError(t, "add an 11th tag", e.do("POST", base+b+"/tags", map[string]any{"tag": tag("eleven", "x")}), 400, "CSBS.7000")
	wantError(t, "batch create an 11th tag", action(b, "create", tag("k0", "new"), tag("eleven", "x")), 400, "CSBS.7000")
	if got := tagsOf(b); len(got) != 10 || !slices.Contains(got, "k0=v0") {
		t.Errorf("refused creates changed the tags: %v", got)
	}
	// Overwriting keys that exist stays within 10.
	if r := action(b, "create", tag("k0", "new"), tag("k1", "new")); r.status != 204 {
		t.Errorf("batch overwrite: %d %s", r.status, r.body)
	}
	var eleven []map[string]any
	for i := range 11 {
		eleven = append(eleven, tag(fmt.Sprintf("x%d", i), "v"))
	}
	wantError(t, "batch create of 11 tags", action(c, "create", eleven...), 400, "CSBS.7000")
	wantError(t, "batch create with a repeated key", action(c, "create", tag("d", "1"), tag("d", "2")), 400, "CSBS.9001")
	wantError(t, "batch create of an empty list", action(c, "create"), 400, "CSBS.9001")
	wantError(t, "batch create of a bad key", action(c, "create", tag("a=b", "1")), 400, "CSBS.9001")
	wantError(t, "batch with an unknown action", action(c, "update", tag("d", "1")), 400, "CSBS.9001")
	wantError(t, "batch without tags", e.do("POST", base+c+"/tags/action", map[string]any{"action": "create"}), 400, "CSBS.9001")
	wantError(t, "batch on an unknown backup", action(newUUID(), "create", tag("d", "1")), 404, "CSBS.3001")

	// Batch delete: missing tags and repeated keys are fine; a value, when
	// given, must match; no character check.
	r := e.do("POST", base+b+"/tags/action", map[string]any{"action": "delete", "tags": []map[string]any{
		{"key": "k0"}, {"key": "k0"}, tag("k1", "other"), tag("k2", "v2"), tag("no*such", "x"), {"key": " empty "},
	}})
	if r.status != 204 {
		t.Fatalf("batch delete: %d %s", r.status, r.body)
	}
	want := []string{long[:36] + "=" + strings.Repeat("v", 43), "k1=new", "k3=v3", "k4=v4", "k5=v5", "k6=v6", "k7=v7"}
	slices.Sort(want)
	if got := tagsOf(b); !reflect.DeepEqual(got, want) {
		t.Errorf("after batch delete: %v\nwant %v", got, want)
	}
	wantError(t, "batch delete with an empty key", action(b, "delete", tag(" ", "")), 400, "CSBS.9001")
	wantError(t, "batch delete of a key of 128", action(b, "delete", tag(strings.Repeat("k", 128), "")), 400, "CSBS.9001")
	action(b, "delete", tag(long[:36], strings.Repeat("v", 43)), tag("k1", "new"), tag("k3", "v3"), tag("k4", "v4"),
		tag("k5", "v5"), tag("k6", "v6"), tag("k7", "v7"))
	if got := tagsOf(b); len(got) != 0 {
		t.Fatalf("tags of b after deleting all: %v", got)
	}
	action(b, "create", tag("team", "web"))

	// The tags of the project: keys with their values, sorted; no other project's.
	r = e.do("GET", base+"tags", nil)
	var proj struct {
		Tags []struct {
			Key    string   `json:"key"`
			Values []string `json:"values"`
		} `json:"tags"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &proj) != nil {
		t.Fatalf("project tags: %d %s", r.status, r.body)
	}
	if got := fmt.Sprint(proj.Tags); got != "[{env [dev prod]} {team [db web]} {tier [web]}]" {
		t.Errorf("project tags: %s", got)
	}

	// Filter and count. a: env=prod tier=web; b: team=web; c: env=dev team=db.
	cond := func(k string, vs ...string) map[string]any {
		if vs == nil {
			vs = []string{}
		}
		return map[string]any{"key": k, "values": vs}
	}
	query := func(body map[string]any) resp { return e.do("POST", base+"resource_instances/action", body) }
	for _, tc := range []struct {
		name string
		body map[string]any
		want []string // newest first
	}{
		{"everything", map[string]any{}, []string{c, b, a}},
		{"tags: one key, one value", map[string]any{"tags": []any{cond("env", "prod")}}, []string{a}},
		{"tags: values are OR", map[string]any{"tags": []any{cond("env", "prod", "dev")}}, []string{c, a}},
		{"tags: empty values = any value", map[string]any{"tags": []any{cond("team")}}, []string{c, b}},
		{"tags: keys are AND", map[string]any{"tags": []any{cond("env"), cond("team", "db")}}, []string{c}},
		{"tags: spaces trimmed", map[string]any{"tags": []any{cond(" env ", " prod ")}}, []string{a}},
		{"tags_any: keys are OR", map[string]any{"tags_any": []any{cond("tier"), cond("team", "db")}}, []string{c, a}},
		{"not_tags: left out when all hold", map[string]any{"not_tags": []any{cond("env"), cond("team")}}, []string{b, a}},
		{"not_tags: one key", map[string]any{"not_tags": []any{cond("env", "dev")}}, []string{b, a}},
		{"not_tags_any: left out when any holds", map[string]any{"not_tags_any": []any{cond("tier"), cond("team", "db")}}, []string{b}},
		{"tags and not_tags_any", map[string]any{"tags": []any{cond("team")}, "not_tags_any": []any{cond("env")}}, []string{b}},
		{"tags_any and not_tags", map[string]any{"tags_any": []any{cond("env"), cond("team")}, "not_tags": []any{cond("team", "web")}}, []string{c, a}},
		{"matches: fuzzy, case folded", map[string]any{"matches": []any{tag("resource_name", "WEB")}}, []string{c, a}},
		{"matches and tags", map[string]any{"matches": []any{tag("resource_name", "web")}, "tags": []any{cond("env", "dev")}}, []string{c}},
		{"matches: empty value is exact", map[string]any{"matches": []any{tag("resource_name", "")}}, nil},
		{"no match", map[string]any{"tags": []any{cond("env", "test")}}, nil},
	} {
		for _, act := range []string{"filter", "count"} {
			body := map[string]any{"action": act}
			for k, v := range tc.body {
				body[k] = v
			}
			r := query(body)
			if r.status != 200 {
				t.Errorf("%s %s: %d %s", act, tc.name, r.status, r.body)
				continue
			}
			var out struct {
				Resources []struct {
					ID     string         `json:"resource_id"`
					Name   string         `json:"resource_name"`
					Detail map[string]any `json:"resource_detail"`
					Tags   []any          `json:"tags"`
				} `json:"resources"`
				Total *int `json:"total_count"`
			}
			json.Unmarshal(r.body, &out)
			if out.Total == nil || *out.Total != len(tc.want) {
				t.Errorf("%s %s: total_count %v, want %d: %s", act, tc.name, out.Total, len(tc.want), r.body)
			}
			if act == "count" {
				if strings.Contains(string(r.body), "resources") {
					t.Errorf("count %s: the answer has resources: %s", tc.name, r.body)
				}
				continue
			}
			var ids []string
			for _, res := range out.Resources {
				ids = append(ids, res.ID)
				if res.Detail["id"] != res.ID || res.Detail["status"] != "available" || res.Name != res.Detail["name"] || res.Tags == nil {
					t.Errorf("filter %s: resource %s: name %q, detail %v, tags %v", tc.name, res.ID, res.Name, res.Detail, res.Tags)
				}
			}
			if !reflect.DeepEqual(ids, tc.want) {
				t.Errorf("filter %s: %v, want %v", tc.name, ids, tc.want)
			}
		}
	}

	// Paging: limit and offset, as strings (the reference) or numbers.
	page := func(limit, offset any) []string {
		r := query(map[string]any{"action": "filter", "limit": limit, "offset": offset})
		var out struct {
			Resources []struct {
				ID string `json:"resource_id"`
			} `json:"resources"`
			Total int `json:"total_count"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &out) != nil || out.Total != 3 {
			t.Fatalf("page %v/%v: %d %s", limit, offset, r.status, r.body)
		}
		var ids []string
		for _, res := range out.Resources {
			ids = append(ids, res.ID)
		}
		return ids
	}
	if got := page("2", "0"); !reflect.DeepEqual(got, []string{c, b}) {
		t.Errorf("first page: %v", got)
	}
	if got := page(2, 2); !reflect.DeepEqual(got, []string{a}) {
		t.Errorf("second page: %v", got)
	}
	if got := page("1000", "3"); got != nil {
		t.Errorf("page after the end: %v", got)
	}

	// Refusals of queries.
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"no action", map[string]any{}},
		{"unknown action", map[string]any{"action": "list"}},
		{"limit 0", map[string]any{"action": "filter", "limit": "0"}},
		{"limit 1001", map[string]any{"action": "filter", "limit": "1001"}},
		{"limit not a number", map[string]any{"action": "filter", "limit": "ten"}},
		{"negative offset", map[string]any{"action": "filter", "offset": "-1"}},
		{"empty tags", map[string]any{"action": "filter", "tags": []any{}}},
		{"empty not_tags_any", map[string]any{"action": "count", "not_tags_any": []any{}}},
		{"repeated key", map[string]any{"action": "filter", "tags_any": []any{cond("env"), cond("env")}}},
		{"empty key", map[string]any{"action": "filter", "tags": []any{cond(" ")}}},
		{"key of 128", map[string]any{"action": "filter", "tags": []any{cond(strings.Repeat("k", 128))}}},
		{"no values", map[string]any{"action": "filter", "tags": []any{map[string]any{"key": "env"}}}},
		{"repeated value", map[string]any{"action": "filter", "not_tags": []any{cond("env", "a", "a")}}},
		{"11 values", map[string]any{"action": "filter", "tags": []any{cond("env", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11")}}},
		{"11 keys", map[string]any{"action": "filter", "tags": []any{cond("1"), cond("2"), cond("3"), cond("4"), cond("5"), cond("6"), cond("7"), cond("8"), cond("9"), cond("10"), cond("11")}}},
		{"match of another key", map[string]any{"action": "filter", "matches": []any{tag("name", "x")}}},
		{"empty matches", map[string]any{"action": "filter", "matches": []any{}}},
	} {
		wantError(t, "query: "+tc.name, query(tc.body), 400, "CSBS.9001")
	}
}

// TestPolicyTags runs the tag operations of csbs_backup_policy: the same
// rules as for backups, with CSBS.3000 for an unknown policy and an empty
// resource_detail.
func TestPolicyTags(t *testing.T) {
	e := newEnv(t)
	var servers []string
	for range 3 {
		s := newUUID()
		e.addServer(s, project, "ACTIVE", mib)
		servers = append(servers, s)
	}
	e.start()
	weekly := "FREQ=WEEKLY;BYDAY=MO;BYHOUR=3;BYMINUTE=0"
	create := func(name, server string, tags ...map[string]any) string {
		body := polBody(name, false, weekly, nil, server)
		if tags != nil {
			body["policy"].(map[string]any)["tags"] = tags
		}
		return e.polCreate(project, body)["id"].(string)
	}
	a := create("daily-web", servers[0], tag("env", "prod"))
	b := create("weekly-db", servers[1])
	c := create("monthly-web", servers[2], tag("env", "dev"), tag("team", "db"))

	base := "/v1/" + project + "/csbs_backup_policy/"
	tagsOf := func(id string) []string { return tagList(t, e.do("GET", base+id+"/tags", nil)) }
	if got := tagsOf(a); !reflect.DeepEqual(got, []string{"env=prod"}) {
		t.Errorf("tags given at creation: %v", got)
	}
	for _, v := range []string{"ann", " bob "} {
		if r := e.do("POST", base+b+"/tags", map[string]any{"tag": tag("owner", v)}); r.status != 204 {
			t.Fatalf("add tag: %d %s", r.status, r.body)
		}
	}
	if got := tagsOf(b); !reflect.DeepEqual(got, []string{"owner=bob"}) {
		t.Errorf("after add and overwrite: %v", got)
	}
	r := e.do("GET", "/v1/"+project+"/policies/"+b, nil)
	if !strings.Contains(string(r.body), `"tags":[{"key":"owner","value":"bob"}]`) {
		t.Errorf("the policy does not show its tag: %s", r.body)
	}
	if r := e.do("DELETE", base+b+"/tags/owner", nil); r.status != 204 {
		t.Fatalf("delete tag: %d %s", r.status, r.body)
	}
	wantError(t, "delete a missing tag", e.do("DELETE", base+b+"/tags/owner", nil), 404, "CSBS.7001")
	wantError(t, "tags of an unknown policy", e.do("GET", base+newUUID()+"/tags", nil), 404, "CSBS.3000")
	wantError(t, "add to an unknown policy", e.do("POST", base+newUUID()+"/tags", map[string]any{"tag": tag("k", "v")}), 404, "CSBS.3000")
	wantError(t, "bad key", e.do("POST", base+b+"/tags", map[string]any{"tag": tag("a b", "v")}), 400, "CSBS.9001")

	var ten []map[string]any
	for i := range 10 {
		ten = append(ten, tag(fmt.Sprintf("k%d", i), "v"))
	}
	action := func(id, act string, tags ...map[string]any) resp {
		return e.do("POST", base+id+"/tags/action", map[string]any{"action": act, "tags": tags})
	}
	if r := action(b, "create", ten...); r.status != 204 {
		t.Fatalf("batch create: %d %s", r.status, r.body)
	}
	wantError(t, "an 11th tag", e.do("POST", base+b+"/tags", map[string]any{"tag": tag("eleven", "v")}), 400, "CSBS.7000")
	if r := action(b, "delete", ten[1:]...); r.status != 204 {
		t.Fatalf("batch delete: %d %s", r.status, r.body)
	}
	if got := tagsOf(b); !reflect.DeepEqual(got, []string{"k0=v"}) {
		t.Errorf("after batch delete: %v", got)
	}

	r = e.do("GET", base+"tags", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `{"key":"env","values":["dev","prod"]}`) {
		t.Errorf("project policy tags: %d %s", r.status, r.body)
	}
	r = e.do("POST", base+"resource_instances/action", map[string]any{"action": "filter",
		"tags_any": []any{map[string]any{"key": "env", "values": []string{}}}, "matches": []any{tag("resource_name", "web")}})
	var out struct {
		Resources []struct {
			ID     string         `json:"resource_id"`
			Name   string         `json:"resource_name"`
			Detail map[string]any `json:"resource_detail"`
			Tags   []any          `json:"tags"`
		} `json:"resources"`
		Total int `json:"total_count"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &out) != nil {
		t.Fatalf("filter: %d %s", r.status, r.body)
	}
	if out.Total != 2 || len(out.Resources) != 2 || out.Resources[0].ID != c || out.Resources[1].ID != a ||
		out.Resources[0].Name != "monthly-web" || out.Resources[0].Detail == nil || len(out.Resources[0].Detail) != 0 || len(out.Resources[0].Tags) != 2 {
		t.Errorf("filter: %s", r.body)
	}
	r = e.do("POST", base+"resource_instances/action", map[string]any{"action": "count",
		"not_tags_any": []any{map[string]any{"key": "env", "values": []string{"prod"}}}})
	if r.status != 200 || string(r.body) != "{\"total_count\":2}\n" {
		t.Errorf("count: %d %s", r.status, r.body)
	}
	r = e.do("POST", base+"resource_instances/action", map[string]any{"action": "filter", "limit": "1", "offset": "1"})
	if r.status != 200 || json.Unmarshal(r.body, &out) != nil || out.Total != 3 || len(out.Resources) != 1 || out.Resources[0].ID != b {
		t.Errorf("page 2 of 1: %d %s", r.status, r.body)
	}
	wantError(t, "filter limit 1001", e.do("POST", base+"resource_instances/action", map[string]any{"action": "filter", "limit": 1001}), 400, "CSBS.9001")
}
