package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// polPattern is the trigger text of an RRULE.
func polPattern(rule string) string {
	return "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:" + rule + "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
}

// polBody is a create request for servers with one scheduled operation.
func polBody(name string, enabled bool, rule string, def map[string]any, servers ...string) map[string]any {
	res := []map[string]any{}
	for i, s := range servers {
		res = append(res, map[string]any{"id": s, "type": "OS::Nova::Server", "name": fmt.Sprintf("resource%d", i+1)})
	}
	if def == nil {
		def = map[string]any{}
	}
	return map[string]any{"policy": map[string]any{
		"name": name, "description": "My plan", "provider_id": provider,
		"parameters": map[string]any{"common": map[string]any{}},
		"scheduled_operations": []map[string]any{{
			"name": "my-backup-policy", "description": "My backup policy", "enabled": enabled,
			"operation_definition": def, "operation_type": "backup",
			"trigger": map[string]any{"properties": map[string]any{"pattern": polPattern(rule)}},
		}},
		"resources": res,
	}}
}

// polCreate creates a policy and returns it.
func (e *env) polCreate(projectID string, body any) map[string]any {
	e.t.Helper()
	r := e.do("POST", "/v1/"+projectID+"/policies", body)
	if r.status != 200 {
		e.t.Fatalf("create policy: %d %s", r.status, r.body)
	}
	return r.json(e.t)["policy"].(map[string]any)
}

// polExecute executes a policy and returns the checkpoint.
func (e *env) polExecute(projectID, policyID string, params map[string]any) map[string]any {
	e.t.Helper()
	r := e.do("POST", "/v1/"+projectID+"/providers/"+provider+"/checkpoints",
		map[string]any{"checkpoint": map[string]any{"plan_id": policyID, "parameters": params}})
	if r.status != 200 {
		e.t.Fatalf("execute policy: %d %s", r.status, r.body)
	}
	return r.json(e.t)["checkpoint"].(map[string]any)
}

// polWaitCheckpoint waits until every backup of a checkpoint is available.
func (e *env) polWaitCheckpoint(projectID, checkpointID string, want int) []map[string]any {
	e.t.Helper()
	items := e.list(projectID, "checkpoint_id="+checkpointID)
	if len(items) != want {
		e.t.Fatalf("checkpoint %s has %d backups, want %d", checkpointID, len(items), want)
	}
	for i, it := range items {
		items[i] = e.waitStatus(projectID, it["id"].(string), 90*time.Second, "available", "error")
		if items[i]["status"] != "available" {
			e.t.Fatalf("backup %s failed: %v", it["id"], items[i]["extend_info"])
		}
	}
	return items
}

func polError(t *testing.T, what string, r resp, status int, code string) {
	t.Helper()
	var e struct {
		Code string `json:"error_code"`
		Msg  string `json:"error_msg"`
	}
	if err := json.Unmarshal(r.body, &e); r.status != status || err != nil || e.Code != code || e.Msg == "" {
		t.Errorf("%s: %d %s, want %d %s with a message", what, r.status, r.body, status, code)
	}
}

// TestPolicyCRUD creates, reads, lists, updates and deletes policies with
// every field of the reference, and checks the refusals.
func TestPolicyCRUD(t *testing.T) {
	e := newEnv(t, "--quotas-policies", "4")
	s1, s2, s3 := newUUID(), newUUID(), newUUID()
	other := newUUID()
	e.addServer(s1, project, "ACTIVE", 4*mib)
	e.addServer(s2, project, "ACTIVE", 4*mib)
	e.addServer(s3, project, "SHUTOFF", 4*mib)
	e.addServer(other, "otherproject", "ACTIVE", 4*mib)
	e.start()

	weekly := "FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27"
	body := polBody("my-plan", true, weekly, map[string]any{"max_backups": 20}, s1, s2)
	body["policy"].(map[string]any)["tags"] = []map[string]any{{"key": "env", "value": "prod"}}
	before := time.Now().UTC().Add(-time.Second)
	p := e.polCreate(project, body)

	for _, k := range []string{"created_at", "description", "id", "name", "parameters", "project_id", "provider_id", "resources", "scheduled_operations", "status", "tags"} {
		if _, ok := p[k]; !ok {
			t.Errorf("policy lacks %q: %v", k, p)
		}
	}
	id := p["id"].(string)
	if !uuidRe.MatchString(id) || !timeRe.MatchString(p["created_at"].(string)) || p["project_id"] != project ||
		p["provider_id"] != provider || p["name"] != "my-plan" || p["description"] != "My plan" || p["status"] != "suspended" {
		t.Errorf("policy fields: %v", p)
	}
	if _, ok := p["parameters"].(map[string]any)["common"]; !ok {
		t.Errorf("parameters: %v", p["parameters"])
	}
	res := p["resources"].([]any)
	if len(res) != 2 || res[0].(map[string]any)["id"] != s1 || res[0].(map[string]any)["type"] != "OS::Nova::Server" || res[0].(map[string]any)["name"] != "resource1" {
		t.Errorf("resources: %v", res)
	}
	if tags := p["tags"].([]any); len(tags) != 1 || tags[0].(map[string]any)["key"] != "env" {
		t.Errorf("tags: %v", p["tags"])
	}
	ops := p["scheduled_operations"].([]any)
	if len(ops) != 1 {
		t.Fatalf("scheduled_operations: %v", ops)
	}
	op := ops[0].(map[string]any)
	opID := op["id"].(string)
	trig := op["trigger"].(map[string]any)
	props := trig["properties"].(map[string]any)
	def := op["operation_definition"].(map[string]any)
	if !uuidRe.MatchString(opID) || op["trigger_id"] != trig["id"] || !uuidRe.MatchString(trig["id"].(string)) ||
		trig["type"] != "time" || trig["name"] == "" || props["format"] != "ical" || props["pattern"] != polPattern(weekly) ||
		op["enabled"] != true || op["operation_type"] != "backup" || op["name"] != "my-backup-policy" || op["description"] != "My backup policy" {
		t.Errorf("scheduled operation: %v", op)
	}
	start, err := time.Parse("2006-01-02 15:04:05", props["start_time"].(string))
	if err != nil || start.Before(before.Truncate(time.Second)) || start.After(time.Now().UTC().Add(time.Second)) {
		t.Errorf("start_time %v: %v", props["start_time"], err)
	}
	if def["max_backups"] != 20.0 || def["plan_id"] != id || def["provider_id"] != provider {
		t.Errorf("operation_definition: %v", def)
	}

	// Get, and the policy of another project is not visible.
	r := e.do("GET", "/v1/"+project+"/policies/"+id, nil)
	if r.status != 200 || r.json(t)["policy"].(map[string]any)["id"] != id {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	polError(t, "get from another project", e.do("GET", "/v1/otherproject/policies/"+id, nil), 404, "CSBS.3000")
	polError(t, "get unknown", e.do("GET", "/v1/"+project+"/policies/"+newUUID(), nil), 404, "CSBS.3000")

	// Refusals of create.
	bad := func(mut func(p, op, def map[string]any)) map[string]any {
		b := polBody("p2", true, "FREQ=DAILY;BYHOUR=3;BYMINUTE=0", map[string]any{}, s3)
		pb := b["policy"].(map[string]any)
		o := pb["scheduled_operations"].([]map[string]any)[0]
		mut(pb, o, o["operation_definition"].(map[string]any))
		return b
	}
	setPattern := func(rule string) func(p, op, def map[string]any) {
		return func(p, op, def map[string]any) {
			op["trigger"] = map[string]any{"properties": map[string]any{"pattern": polPattern(rule)}}
		}
	}
	refusals := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"no policy", `{}`, 400, "CSBS.9001"},
		{"not JSON", `{"policy": `, 400, "CSBS.9001"},
		{"no name", bad(func(p, op, def map[string]any) { delete(p, "name") }), 400, "CSBS.9001"},
		{"empty name", bad(func(p, op, def map[string]any) { p["name"] = "" }), 400, "CSBS.9001"},
		{"bad name", bad(func(p, op, def map[string]any) { p["name"] = "a b" }), 400, "CSBS.9001"},
		{"long name", bad(func(p, op, def map[string]any) { p["name"] = strings.Repeat("n", 256) }), 400, "CSBS.9001"},
		{"description with <", bad(func(p, op, def map[string]any) { p["description"] = "a<b" }), 400, "CSBS.9001"},
		{"name a number", bad(func(p, op, def map[string]any) { p["name"] = 5 }), 400, "CSBS.9001"},
		{"no provider", bad(func(p, op, def map[string]any) { delete(p, "provider_id") }), 400, "CSBS.9001"},
		{"other provider", bad(func(p, op, def map[string]any) { p["provider_id"] = newUUID() }), 400, "CSBS.9001"},
		{"no resources", bad(func(p, op, def map[string]any) { delete(p, "resources") }), 400, "CSBS.9001"},
		{"volume type", bad(func(p, op, def map[string]any) {
			p["resources"] = []map[string]any{{"id": s3, "type": "OS::Cinder::Volume", "name": "v"}}
		}), 400, "CSBS.6003"},
		{"unknown server", bad(func(p, op, def map[string]any) {
			p["resources"] = []map[string]any{{"id": newUUID(), "type": "OS::Nova::Server", "name": "x"}}
		}), 400, "CSBS.6000"},
		{"server of another project", bad(func(p, op, def map[string]any) {
			p["resources"] = []map[string]any{{"id": other, "type": "OS::Nova::Server", "name": "x"}}
		}), 400, "CSBS.6000"},
		{"server in another policy", bad(func(p, op, def map[string]any) {
			p["resources"] = []map[string]any{{"id": s1, "type": "OS::Nova::Server", "name": "x"}}
		}), 400, "CSBS.6004"},
		{"server twice", bad(func(p, op, def map[string]any) {
			p["resources"] = []map[string]any{{"id": s3, "type": "OS::Nova::Server", "name": "x"}, {"id": s3, "type": "OS::Nova::Server", "name": "x"}}
		}), 400, "CSBS.9001"},
		{"no operations", bad(func(p, op, def map[string]any) { delete(p, "scheduled_operations") }), 400, "CSBS.9001"},
		{"two operations", bad(func(p, op, def map[string]any) {
			p["scheduled_operations"] = []map[string]any{op, op}
		}), 400, "CSBS.9001"},
		{"operation type", bad(func(p, op, def map[string]any) { op["operation_type"] = "replication" }), 400, "CSBS.9001"},
		{"no enabled", bad(func(p, op, def map[string]any) { delete(op, "enabled") }), 400, "CSBS.9001"},
		{"enabled a string", bad(func(p, op, def map[string]any) { op["enabled"] = "yes" }), 400, "CSBS.9001"},
		{"no trigger", bad(func(p, op, def map[string]any) { delete(op, "trigger") }), 400, "CSBS.9001"},
		{"max_backups -2", bad(func(p, op, def map[string]any) { def["max_backups"] = -2 }), 400, "CSBS.9001"},
		{"max_backups 100000", bad(func(p, op, def map[string]any) { def["max_backups"] = 100000 }), 400, "CSBS.9001"},
		{"max_backups text", bad(func(p, op, def map[string]any) { def["max_backups"] = "many" }), 400, "CSBS.9001"},
		{"retention -5", bad(func(p, op, def map[string]any) { def["retention_duration_days"] = -5 }), 400, "CSBS.9001"},
		{"permanent text", bad(func(p, op, def map[string]any) { def["permanent"] = "sometimes" }), 400, "CSBS.9001"},
		{"day_backups without timezone", bad(func(p, op, def map[string]any) { def["day_backups"] = 3 }), 400, "CSBS.9001"},
		{"bad timezone", bad(func(p, op, def map[string]any) { def["week_backups"] = 3; def["timezone"] = "Asia/Shanghai" }), 400, "CSBS.9001"},
		{"timezone alone", bad(func(p, op, def map[string]any) { def["timezone"] = "UTC+08:00" }), 400, "CSBS.9001"},
		{"year_backups 101", bad(func(p, op, def map[string]any) { def["year_backups"] = 101; def["timezone"] = "UTC+08:00" }), 400, "CSBS.9001"},
		{"hourly", bad(setPattern("FREQ=HOURLY;BYHOUR=1;BYMINUTE=0")), 400, "CSBS.9001"},
		{"under an hour", bad(setPattern("FREQ=DAILY;BYHOUR=1;BYMINUTE=0,30")), 400, "CSBS.9001"},
		{"under an hour over midnight", bad(setPattern("FREQ=DAILY;BYHOUR=0,23;BYMINUTE=10,40")), 400, "CSBS.9001"},
		{"unsupported part", bad(setPattern("FREQ=DAILY;INTERVAL=2;BYHOUR=1;BYMINUTE=0")), 400, "CSBS.9001"},
		{"too many tags", bad(func(p, op, def map[string]any) {
			var tags []map[string]any
			for i := 0; i < 11; i++ {
				tags = append(tags, map[string]any{"key": fmt.Sprintf("k%d", i), "value": "v"})
			}
			p["tags"] = tags
		}), 400, "CSBS.7000"},
		{"bad tag key", bad(func(p, op, def map[string]any) { p["tags"] = []map[string]any{{"key": "a b", "value": ""}} }), 400, "CSBS.9001"},
		{"empty tag list", bad(func(p, op, def map[string]any) { p["tags"] = []map[string]any{} }), 400, "CSBS.9001"},
	}
	for _, tc := range refusals {
		polError(t, tc.name, e.do("POST", "/v1/"+project+"/policies", tc.body), tc.status, tc.code)
	}
	// The message names the pattern problem.
	r = e.do("POST", "/v1/"+project+"/policies", bad(setPattern("FREQ=DAILY;BYHOUR=1;BYMINUTE=0,30")))
	if !strings.Contains(string(r.body), "1 hour") {
		t.Errorf("pattern refusal does not say why: %s", r.body)
	}

	// Accepted variants: numbers as strings, a long-term rule with a
	// timezone, a disabled policy without servers.
	p2 := e.polCreate(project, bad(func(p, op, def map[string]any) {
		p["resources"] = []map[string]any{}
		def["max_backups"] = "5"
		def["retention_duration_days"] = -1
		def["permanent"] = false
		def["day_backups"] = 7
		def["month_backups"] = 12
		def["timezone"] = "UTC+08:00"
	}))
	d2 := p2["scheduled_operations"].([]any)[0].(map[string]any)["operation_definition"].(map[string]any)
	if d2["max_backups"] != 5.0 || d2["retention_duration_days"] != -1.0 || d2["permanent"] != false ||
		d2["day_backups"] != 7.0 || d2["month_backups"] != 12.0 || d2["timezone"] != "UTC+08:00" {
		t.Errorf("operation_definition: %v", d2)
	}
	p3 := e.polCreate(project, polBody("idle", false, weekly, nil))
	if p3["status"] != "suspended" || len(p3["resources"].([]any)) != 0 {
		t.Errorf("disabled policy: %v", p3)
	}
	e.polCreate(project, polBody("idle", false, weekly, nil)) // names need not be unique
	polError(t, "fifth policy over the limit of 4", e.do("POST", "/v1/"+project+"/policies", polBody("five", false, weekly, nil)), 400, "CSBS.0001")

	// List: name filter, sort, paging with links.
	var list struct {
		Policies []map[string]any    `json:"policies"`
		Links    []map[string]string `json:"policies_links"`
	}
	get := func(q string) {
		t.Helper()
		r := e.do("GET", "/v1/"+project+"/policies?"+q, nil)
		if r.status != 200 {
			t.Fatalf("list %s: %d %s", q, r.status, r.body)
		}
		list.Policies, list.Links = nil, nil
		json.Unmarshal(r.body, &list)
	}
	get("")
	if len(list.Policies) != 4 || list.Links != nil {
		t.Fatalf("list: %d policies, links %v", len(list.Policies), list.Links)
	}
	if list.Policies[3]["id"] != id { // newest first by default
		t.Errorf("default order: last is %v", list.Policies[3]["name"])
	}
	get("name=idle")
	if len(list.Policies) != 2 {
		t.Errorf("name=idle: %d", len(list.Policies))
	}
	get("sort=created_at:asc&limit=3")
	if len(list.Policies) != 3 || list.Policies[0]["id"] != id || len(list.Links) != 1 || list.Links[0]["rel"] != "next" {
		t.Fatalf("page 1: %d policies, links %v", len(list.Policies), list.Links)
	}
	next, _ := url.Parse(list.Links[0]["href"])
	if next.Query().Get("marker") != list.Policies[2]["id"] {
		t.Errorf("next link %s", list.Links[0]["href"])
	}
	get(next.RawQuery)
	if len(list.Policies) != 1 || list.Links != nil {
		t.Errorf("page 2: %d policies, links %v", len(list.Policies), list.Links)
	}
	get("sort=name:asc&offset=1&limit=1")
	if len(list.Policies) != 1 || list.Policies[0]["name"] != "idle" {
		t.Errorf("sort by name with offset: %v", list.Policies)
	}
	polError(t, "bad sort key", e.do("GET", "/v1/"+project+"/policies?sort=size", nil), 400, "CSBS.9001")
	polError(t, "bad limit", e.do("GET", "/v1/"+project+"/policies?limit=0", nil), 400, "CSBS.9001")
	polError(t, "bad marker", e.do("GET", "/v1/"+project+"/policies?marker="+newUUID(), nil), 400, "CSBS.9001")

	// Update: rename, replace servers (s2 out, s3 in), disable, change the
	// trigger and the retention of the operation by its id.
	daily := "FREQ=DAILY;BYHOUR=1,13;BYMINUTE=5"
	r = e.do("PUT", "/v1/"+project+"/policies/"+id, map[string]any{"policy": map[string]any{
		"name": "renamed", "description": "",
		"resources": []map[string]any{{"id": s1, "type": "OS::Nova::Server", "name": "a"}, {"id": s3, "type": "OS::Nova::Server", "name": "c"}},
		"scheduled_operations": []map[string]any{{
			"id": opID, "enabled": false,
			"operation_definition": map[string]any{"retention_duration_days": 30, "max_backups": -1},
			"trigger":              map[string]any{"properties": map[string]any{"pattern": polPattern(daily)}},
		}},
	}})
	if r.status != 200 {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	u := r.json(t)["policy"].(map[string]any)
	uop := u["scheduled_operations"].([]any)[0].(map[string]any)
	udef := uop["operation_definition"].(map[string]any)
	if u["name"] != "renamed" || u["description"] != "" || u["status"] != "suspended" || uop["enabled"] != false ||
		uop["id"] != opID || uop["trigger"].(map[string]any)["properties"].(map[string]any)["pattern"] != polPattern(daily) ||
		udef["retention_duration_days"] != 30.0 || udef["max_backups"] != -1.0 || uop["name"] != "my-backup-policy" {
		t.Errorf("updated policy: %v", u)
	}
	if ur := u["resources"].([]any); len(ur) != 2 || ur[1].(map[string]any)["id"] != s3 {
		t.Errorf("updated resources: %v", ur)
	}
	if tags := u["tags"].([]any); len(tags) != 1 {
		t.Errorf("update without tags changed them: %v", tags)
	}
	// s2 is free again: another policy may take it; s3 is not.
	polError(t, "s3 now in the renamed policy", e.do("PUT", "/v1/"+project+"/policies/"+p3["id"].(string),
		map[string]any{"policy": map[string]any{"resources": []map[string]any{{"id": s3, "type": "OS::Nova::Server", "name": "c"}}}}), 400, "CSBS.6004")
	r = e.do("PUT", "/v1/"+project+"/policies/"+p3["id"].(string),
		map[string]any{"policy": map[string]any{"resources": []map[string]any{{"id": s2, "type": "OS::Nova::Server", "name": "b"}}}})
	if r.status != 200 {
		t.Errorf("associate a freed server: %d %s", r.status, r.body)
	}
	// Enable again.
	r = e.do("PUT", "/v1/"+project+"/policies/"+id, map[string]any{"policy": map[string]any{
		"scheduled_operations": []map[string]any{{"id": opID, "enabled": true}}}})
	if r.status != 200 || r.json(t)["policy"].(map[string]any)["status"] != "suspended" {
		t.Errorf("enable: %d %s", r.status, r.body)
	}
	polError(t, "update unknown operation", e.do("PUT", "/v1/"+project+"/policies/"+id, map[string]any{"policy": map[string]any{
		"scheduled_operations": []map[string]any{{"id": newUUID(), "enabled": true}}}}), 400, "CSBS.9001")
	polError(t, "update bad pattern", e.do("PUT", "/v1/"+project+"/policies/"+id, map[string]any{"policy": map[string]any{
		"scheduled_operations": []map[string]any{{"id": opID, "trigger": map[string]any{"properties": map[string]any{"pattern": "x"}}}}}}), 400, "CSBS.9001")
	polError(t, "update unknown policy", e.do("PUT", "/v1/"+project+"/policies/"+newUUID(), map[string]any{"policy": map[string]any{"name": "x"}}), 404, "CSBS.3000")
	polError(t, "update from another project", e.do("PUT", "/v1/otherproject/policies/"+id, map[string]any{"policy": map[string]any{"name": "x"}}), 404, "CSBS.3000")

	// Delete: 200 (the SDK accepts nothing else), then gone; its servers are free.
	polError(t, "delete from another project", e.do("DELETE", "/v1/otherproject/policies/"+id, nil), 404, "CSBS.3000")
	if r := e.do("DELETE", "/v1/"+project+"/policies/"+id, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	polError(t, "get deleted", e.do("GET", "/v1/"+project+"/policies/"+id, nil), 404, "CSBS.3000")
	polError(t, "delete again", e.do("DELETE", "/v1/"+project+"/policies/"+id, nil), 404, "CSBS.3000")
	e.polCreate(project, polBody("again", true, weekly, nil, s1, s3))
}

// TestPolicyExecute executes a policy: one backup per server, with the
// policy's id, the auto_trigger asked for and the policy's tags.
func TestPolicyExecute(t *testing.T) {
	e := newEnv(t)
	s1, s2, gone := newUUID(), newUUID(), newUUID()
	e.addServer(s1, project, "ACTIVE", 8*mib)
	e.addServer(s2, project, "ACTIVE", 8*mib)
	e.addServer(gone, project, "ACTIVE", 4*mib)
	e.start()

	body := polBody("exec", false, "FREQ=DAILY;BYHOUR=3;BYMINUTE=0", nil, s1, s2, gone)
	body["policy"].(map[string]any)["tags"] = []map[string]any{{"key": "team", "value": "ops"}}
	p := e.polCreate(project, body)
	id := p["id"].(string)
	// A server removed from the inventory is left out of executions.
	e.inv.Servers = e.inv.Servers[:2]
	e.writeInventory()
	time.Sleep(1100 * time.Millisecond) // the inventory is re-read when its mtime changes

	cp := e.polExecute(project, id, map[string]any{"auto_trigger": false})
	plan := cp["protection_plan"].(map[string]any)
	if cp["status"] != "protecting" || plan["id"] != id || plan["name"] != "exec" || len(plan["resources"].([]any)) != 2 {
		t.Errorf("checkpoint: %v", cp)
	}
	if extra, _ := cp["extra_info"].(map[string]any); extra["created_by"] != "manual" {
		t.Errorf("extra_info: %v", cp["extra_info"])
	}
	// Executing again while it runs is refused (unless it already finished).
	r := e.do("POST", "/v1/"+project+"/providers/"+provider+"/checkpoints",
		map[string]any{"checkpoint": map[string]any{"plan_id": id, "parameters": map[string]any{}}})
	items := e.polWaitCheckpoint(project, cp["id"].(string), 2)
	if r.status == 200 {
		t.Logf("the first execution finished before the second request")
		e.polWaitCheckpoint(project, r.json(t)["checkpoint"].(map[string]any)["id"].(string), 2)
	} else {
		polError(t, "execute while executing", r, 400, "CSBS.1001")
	}
	seen := map[string]bool{}
	for _, it := range items {
		seen[it["resource_id"].(string)] = true
		ext := it["extend_info"].(map[string]any)
		if ext["auto_trigger"] != false || ext["created_by"] != "manual" || !strings.HasPrefix(it["name"].(string), "manualbk_") {
			t.Errorf("manual policy backup: %v", it)
		}
		if tags := it["tags"].([]any); len(tags) != 1 || tags[0].(map[string]any)["key"] != "team" {
			t.Errorf("backup tags %v, want the policy's", tags)
		}
	}
	if !seen[s1] || !seen[s2] {
		t.Errorf("backups of %v, want %s and %s", seen, s1, s2)
	}

	// A subset with auto_trigger: the policy_id filter finds them.
	cp2 := e.polExecute(project, id, map[string]any{"auto_trigger": true, "resources": []string{s2}})
	it2 := e.polWaitCheckpoint(project, cp2["id"].(string), 1)[0]
	ext := it2["extend_info"].(map[string]any)
	if it2["resource_id"] != s2 || ext["auto_trigger"] != true || ext["created_by"] != "auto" || ext["incremental"] != true ||
		!strings.HasPrefix(it2["name"].(string), "autobk_") {
		t.Errorf("automatic execution: %v", it2)
	}
	// An empty list means all the policy's servers, as an omitted one: the
	// SDK sends [] for an empty slice.
	cp3 := e.polExecute(project, id, map[string]any{"resources": []string{}})
	e.polWaitCheckpoint(project, cp3["id"].(string), 2)
	if n := e.count(project, "policy_id="+id); n < 3 {
		t.Errorf("count by policy_id: %d", n)
	}

	// Refusals.
	exec := func(body any) resp {
		return e.do("POST", "/v1/"+project+"/providers/"+provider+"/checkpoints", body)
	}
	polError(t, "no checkpoint", exec(`{}`), 400, "CSBS.9001")
	polError(t, "no plan_id", exec(map[string]any{"checkpoint": map[string]any{"parameters": map[string]any{}}}), 400, "CSBS.9001")
	polError(t, "unknown plan", exec(map[string]any{"checkpoint": map[string]any{"plan_id": newUUID(), "parameters": map[string]any{}}}), 404, "CSBS.3000")
	polError(t, "server not in the policy", exec(map[string]any{"checkpoint": map[string]any{"plan_id": id,
		"parameters": map[string]any{"resources": []string{newUUID()}}}}), 400, "CSBS.9001")
	polError(t, "bad provider", e.do("POST", "/v1/"+project+"/providers/"+newUUID()+"/checkpoints",
		map[string]any{"checkpoint": map[string]any{"plan_id": id, "parameters": map[string]any{}}}), 400, "CSBS.9001")
	polError(t, "plan of another project", e.do("POST", "/v1/otherproject/providers/"+provider+"/checkpoints",
		map[string]any{"checkpoint": map[string]any{"plan_id": id, "parameters": map[string]any{}}}), 404, "CSBS.3000")
	empty := e.polCreate(project, polBody("empty", false, "FREQ=DAILY;BYHOUR=3;BYMINUTE=0", nil))
	polError(t, "policy without servers", exec(map[string]any{"checkpoint": map[string]any{"plan_id": empty["id"], "parameters": map[string]any{}}}), 400, "CSBS.6032")
	polError(t, "policy without servers, resources []", exec(map[string]any{"checkpoint": map[string]any{"plan_id": empty["id"],
		"parameters": map[string]any{"resources": []string{}}}}), 400, "CSBS.6032")

	// Deleting the policy keeps its backups.
	n := e.count(project, "policy_id="+id)
	if r := e.do("DELETE", "/v1/"+project+"/policies/"+id, nil); r.status != 200 {
		t.Fatalf("delete policy: %d", r.status)
	}
	if m := e.count(project, "policy_id="+id); m != n {
		t.Errorf("after deleting the policy %d backups, before %d", m, n)
	}
}

// TestPolicyRetention: automatic backups beyond max_backups are deleted
// after each automatic backup; manual ones never.
func TestPolicyRetention(t *testing.T) {
	e := newEnv(t)
	s1 := newUUID()
	e.addServer(s1, project, "ACTIVE", 4*mib)
	e.start()
	p := e.polCreate(project, polBody("keep2", false, "FREQ=DAILY;BYHOUR=3;BYMINUTE=0", map[string]any{"max_backups": 2}, s1))
	id := p["id"].(string)

	manual := e.polWaitCheckpoint(project, e.polExecute(project, id, map[string]any{"auto_trigger": false})["id"].(string), 1)[0]
	_, protected := e.protect(project, s1, nil)
	e.waitStatus(project, protected, 60*time.Second, "available")
	var autos []string
	for i := 0; i < 4; i++ {
		it := e.polWaitCheckpoint(project, e.polExecute(project, id, map[string]any{"auto_trigger": true})["id"].(string), 1)[0]
		autos = append(autos, it["id"].(string))
	}
	// The two oldest automatic backups go; retention runs right after each
	// backup, deletes asynchronously.
	for _, old := range autos[:2] {
		e.waitStatus(project, old, 60*time.Second, "gone")
	}
	for _, keep := range append([]string{manual["id"].(string), protected}, autos[2:]...) {
		if it := e.item(project, keep); it == nil || it["status"] != "available" {
			t.Errorf("backup %s should be kept: %v", keep, it)
		}
	}
	if n := e.count(project, "resource_id="+s1); n != 4 {
		t.Errorf("%d backups of the server, want 4 (1 manual policy, 1 protect, 2 automatic)", n)
	}
}

// nextMinute returns a UTC minute at least 40 s ahead.
func nextMinute() time.Time {
	t := time.Now().UTC().Add(40 * time.Second).Truncate(time.Minute).Add(time.Minute)
	return t
}

// TestPolicySchedule fires a real schedule a minute or two ahead, with two
// csbs processes on one PostgreSQL database: exactly one backup per server
// for the fire time, automatic, incremental after an earlier backup.
func TestPolicySchedule(t *testing.T) {
	e := newEnv(t, "--policies-tick", "1s").withPostgres()
	s1, s2 := newUUID(), newUUID()
	e.addServer(s1, project, "ACTIVE", 4*mib)
	e.addServer(s2, project, "ACTIVE", 4*mib)
	e.start()
	// The second process shares the database, the data directory (the
	// repository and its password) and the inventory.
	e2 := &env{t: t, dir: e.dir, dataDir: e.dataDir, invPath: e.invPath, inv: e.inv, database: e.database, extra: e.extra}
	t.Cleanup(func() {
		e2.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("second csbs log:\n%s", tail(e2.log(), 6000))
		}
	})
	e2.start()

	fire := nextMinute()
	rule := fmt.Sprintf("FREQ=DAILY;BYHOUR=%d;BYMINUTE=%d", fire.Hour(), fire.Minute())
	p := e.polCreate(project, polBody("sched", true, rule, nil, s1, s2))
	id := p["id"].(string)
	// An earlier backup of s1 makes its scheduled one incremental.
	e.polWaitCheckpoint(project, e2.polExecute(project, id, map[string]any{"auto_trigger": false})["id"].(string), 2)

	deadline := fire.Add(90 * time.Second)
	var autos []map[string]any
	for time.Now().Before(deadline) {
		autos = autos[:0]
		for _, it := range e.list(project, "policy_id="+id) {
			if it["extend_info"].(map[string]any)["auto_trigger"] == true {
				autos = append(autos, it)
			}
		}
		if len(autos) >= 2 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(autos) != 2 {
		t.Fatalf("%d scheduled backups by %s, want 2 (fire time %s)", len(autos), time.Now().UTC().Format(time.TimeOnly), fire.Format(time.TimeOnly))
	}
	for _, it := range autos {
		it = e.waitStatus(project, it["id"].(string), 60*time.Second, "available", "error")
		ext := it["extend_info"].(map[string]any)
		if it["status"] != "available" || ext["created_by"] != "auto" || ext["incremental"] != true || !strings.HasPrefix(it["name"].(string), "autobk_") {
			t.Errorf("scheduled backup: %v", it)
		}
		created, _ := time.Parse("2006-01-02T15:04:05.000000", it["created_at"].(string))
		if created.Before(fire) || created.After(fire.Add(30*time.Second)) {
			t.Errorf("scheduled backup created at %s, fire time %s", created, fire)
		}
	}
	// Both processes looked at the fire time (ticks of 1 s); give them a
	// few more ticks, then still one backup per server.
	time.Sleep(3 * time.Second)
	n := 0
	for _, it := range e2.list(project, "policy_id="+id) {
		if it["extend_info"].(map[string]any)["auto_trigger"] == true {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d scheduled backups after more ticks, want 2", n)
	}
	if a, b := strings.Count(e.log()+e2.log(), "scheduled backup started"), 1; a != b {
		t.Errorf("%d processes started the scheduled backup, want %d", a, b)
	}
}
