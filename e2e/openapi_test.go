package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/openapi"
)

// TestOpenAPIResponses checks the served /openapi.json against real
// answers: for the main operations, the real response fits the
// operation's schema, names no key the schema lacks, and has the shape of
// the document's example (same keys, same JSON kinds).
func TestOpenAPIResponses(t *testing.T) {
	e := newEnv(t)
	e.addServer(serverID, project, "ACTIVE", 4*mib)
	e.start()

	res, err := http.Get(e.base + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	doc, err := openapi.Parse(body)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /openapi.json: %d %v", res.StatusCode, err)
	}

	cp, item := e.protect(project, serverID, map[string]any{"backup_name": "oa"})
	e.waitStatus(project, item, 60*time.Second, "available")
	if r := e.do("POST", "/v1/"+project+"/csbs_backup/"+item+"/tags", map[string]any{"tag": map[string]any{"key": "env", "value": "prod"}}); r.status != 204 {
		t.Fatalf("add tag: %d %s", r.status, r.body)
	}
	pol := e.polCreate(project, polBody("oa-plan", true, "FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27", map[string]any{"max_backups": 5}, serverID))
	policyID := pol["id"].(string)
	r := e.do("POST", "/v1/"+project+"/restores", map[string]any{"restore": map[string]any{
		"checkpoint_id": cp, "provider_id": provider, "restore_target": "",
		"parameters": map[string]any{"checkpoint_item_id": item, "power_on": true, "targets": map[string]any{"server_id": serverID}}}})
	if r.status != 200 {
		t.Fatalf("restore: %d %s", r.status, r.body)
	}
	restoreID := r.json(t)["restore"].(map[string]any)["id"].(string)
	waitRestore(t, e, restoreID)
	var jobID string
	if logs := e.do("GET", "/v1/"+project+"/operation_logs", nil).json(t)["operation_logs"].([]any); len(logs) > 0 {
		jobID = logs[0].(map[string]any)["id"].(string)
	}

	v1 := "/v1/{project_id}"
	tests := []struct {
		method, pattern, path string
		body                  any
		code                  string
	}{
		{"POST", v1 + "/providers/{provider_id}/resources/{resource_id}/action", "/providers/" + provider + "/resources/" + serverID + "/action",
			map[string]any{"protect": map[string]any{"backup_name": "oa2"}}, "200"},
		{"GET", v1 + "/checkpoint_items", "/checkpoint_items?status=protecting", nil, "200"}, // waits for oa2
		{"GET", v1 + "/checkpoint_items", "/checkpoint_items?checkpoint_id=" + cp, nil, "200"},
		{"GET", v1 + "/checkpoint_items/{checkpoint_item_id}", "/checkpoint_items/" + item, nil, "200"},
		{"GET", v1 + "/checkpoint_items/count", "/checkpoint_items/count", nil, "200"},
		{"POST", v1 + "/providers/{provider_id}/resources/action", "/providers/" + provider + "/resources/action",
			map[string]any{"check_protectable": []any{map[string]any{"resource_id": serverID, "resource_type": "OS::Nova::Server"}}}, "200"},
		{"GET", v1 + "/restores/{restore_id}", "/restores/" + restoreID, nil, "200"},
		{"GET", v1 + "/restores", "/restores", nil, "200"},
		{"GET", v1 + "/csbs_backup/{resource_id}/tags", "/csbs_backup/" + item + "/tags", nil, "200"},
		{"GET", v1 + "/csbs_backup/tags", "/csbs_backup/tags", nil, "200"},
		{"POST", v1 + "/csbs_backup/resource_instances/action", "/csbs_backup/resource_instances/action",
			map[string]any{"action": "filter", "tags": []any{map[string]any{"key": "env", "values": []string{"prod"}}}}, "200"},
		{"GET", v1 + "/quotas", "/quotas", nil, "200"},
		{"GET", v1 + "/operation_logs", "/operation_logs", nil, "200"},
		{"GET", v1 + "/operation_logs/{operation_log_id}", "/operation_logs/" + jobID, nil, "200"},
		{"GET", v1 + "/policies", "/policies", nil, "200"},
		{"GET", v1 + "/policies/{policy_id}", "/policies/" + policyID, nil, "200"},
		{"PUT", v1 + "/policies/{policy_id}", "/policies/" + policyID, map[string]any{"policy": map[string]any{"name": "oa-plan-2"}}, "200"},
		{"POST", v1 + "/providers/{provider_id}/checkpoints", "/providers/" + provider + "/checkpoints",
			map[string]any{"checkpoint": map[string]any{"plan_id": policyID, "parameters": map[string]any{}}}, "200"},
		{"GET", v1 + "/checkpoint_items/{checkpoint_item_id}", "/checkpoint_items/00000000-0000-0000-0000-000000000000", nil, "404"},
		{"GET", v1 + "/kept_clones", "/kept_clones?all_tenants=true", nil, "200"},
		{"DELETE", v1 + "/kept_clones", "/kept_clones?server_id=" + serverID, nil, "200"},
		{"GET", v1 + "/kept_clones", "/kept_clones?server_id=", nil, "400"},
	}
	for _, tc := range tests {
		name := tc.method + " " + tc.path
		schema, example, ok := doc.Response(tc.method, tc.pattern, tc.code)
		if !ok {
			t.Errorf("%s: openapi.json has no %s response for %s %s", name, tc.code, tc.method, tc.pattern)
			continue
		}
		if strings.Contains(tc.path, "status=protecting") {
			for _, it := range e.list(project, "") {
				e.waitStatus(project, it["id"].(string), 60*time.Second, "available")
			}
		}
		r := e.do(tc.method, "/v1/"+project+tc.path, tc.body)
		if fmt.Sprint(r.status) != tc.code {
			t.Errorf("%s: status %d, want %s: %s", name, r.status, tc.code, r.body)
			continue
		}
		var got any
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Errorf("%s: not JSON: %s", name, r.body)
			continue
		}
		for _, err := range doc.Check(schema, got, "") {
			t.Errorf("%s: the response does not fit the schema: %v", name, err)
		}
		if extra := doc.Undocumented(schema, got, ""); len(extra) > 0 {
			t.Errorf("%s: the response has keys the schema does not name: %v", name, extra)
		}
		if example != nil {
			for _, d := range shapeDiff(example, got, "$") {
				t.Errorf("%s: the example differs from the real response: %s", name, d)
			}
		}
	}
}

// shapeDiff compares the shapes of two JSON values: the keys of objects
// (recursively) and the kinds of values; a list is compared by its first
// element, and null matches anything (an optional value).
func shapeDiff(want, got any, at string) []string {
	if want == nil || got == nil {
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: example has an object, response %T", at, got)}
		}
		var out []string
		for k := range w {
			if _, ok := g[k]; !ok {
				out = append(out, fmt.Sprintf("%s.%s: in the example, not in the response", at, k))
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				out = append(out, fmt.Sprintf("%s.%s: in the response, not in the example", at, k))
			}
		}
		for k, wv := range w {
			if gv, ok := g[k]; ok && !isOpenMap(at+"."+k) {
				out = append(out, shapeDiff(wv, gv, at+"."+k)...)
			}
		}
		sort.Strings(out)
		return out
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: example has a list, response %T", at, got)}
		}
		if len(w) > 0 && len(g) > 0 {
			return shapeDiff(w[0], g[0], at+"[0]")
		}
		return nil
	}
	if fmt.Sprintf("%T", want) != fmt.Sprintf("%T", got) {
		return []string{fmt.Sprintf("%s: example has %T, response %T", at, want, got)}
	}
	return nil
}

// isOpenMap reports maps keyed by data (resource ids), whose keys differ
// between any two answers.
func isOpenMap(at string) bool {
	return strings.HasSuffix(at, ".resources_status") || strings.HasSuffix(at, ".resources_reason")
}

func waitRestore(t *testing.T, e *env, id string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		r := e.do("GET", "/v1/"+project+"/restores/"+id, nil)
		if st := r.json(t)["restore"].(map[string]any)["status"]; st != "in_progress" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restore %s still in progress", id)
}
