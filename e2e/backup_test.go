package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	timeRe = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$`)
	uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// TestSeedRequest sends the example request of "Creating a Backup for a
// Resource" verbatim and follows the backup like the Terraform provider:
// check_protectable, protect, list by checkpoint_id, poll until available.
func TestSeedRequest(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			e := newEnv(t)
			if db == "postgres" {
				e.withPostgres()
			}
			paths := e.addServer(serverID, project, "ACTIVE", 24*mib, 12*mib)
			e.start()

			r := e.do("POST", "/v1/"+project+"/providers/"+provider+"/resources/action",
				`{"check_protectable" : [ {"resource_id" : "`+serverID+`", "resource_type" : "OS::Nova::Server"} ]}`)
			if r.status != 200 {
				t.Fatalf("check_protectable: %d %s", r.status, r.body)
			}
			pr := r.json(t)["protectable"].([]any)[0].(map[string]any)
			if pr["result"] != true || pr["resource_id"] != serverID || pr["resource_type"] != "OS::Nova::Server" {
				t.Fatalf("check_protectable answered %v", pr)
			}

			// The seed page's example request, byte for byte.
			r = e.do("POST", "/v1/b942cc8342734d15bcb246babb1953cf/providers/fc4d5750-22e7-4798-8a46-f48f62c4c1da/resources/9506416d-db6c-406e-8bca-c0f43793d914/action", `{
    "protect" : {
    "backup_name" : "backup",
    "description" : "backup des",
    "extra_info" : {
    }
  }
}`)
			if r.status != 200 {
				t.Fatalf("protect: %d %s", r.status, r.body)
			}
			cp := r.json(t)["checkpoint"].(map[string]any)
			for _, k := range []string{"status", "created_at", "id", "resource_graph", "project_id", "protection_plan", "extra_info"} {
				if _, ok := cp[k]; !ok {
					t.Errorf("checkpoint lacks %q: %v", k, cp)
				}
			}
			if st := cp["status"]; st != "protecting" {
				t.Errorf("checkpoint status %v, want protecting", st)
			}
			if !uuidRe.MatchString(cp["id"].(string)) || !timeRe.MatchString(cp["created_at"].(string)) || cp["project_id"] != project {
				t.Errorf("checkpoint id/created_at/project_id: %v", cp)
			}
			plan := cp["protection_plan"].(map[string]any)
			res := plan["resources"].([]any)[0].(map[string]any)
			if res["id"] != serverID || res["type"] != "OS::Nova::Server" || res["name"] == "" || plan["id"] == "" || plan["name"] == "" {
				t.Errorf("protection_plan: %v", plan)
			}
			if _, ok := res["extra_info"].(map[string]any); !ok {
				t.Errorf("resource extra_info is not an object: %v", res)
			}

			items := e.list(project, "checkpoint_id="+cp["id"].(string))
			if len(items) != 1 {
				t.Fatalf("list by checkpoint_id: %d backups", len(items))
			}
			id := items[0]["id"].(string)
			it := e.waitStatus(project, id, 60*time.Second, "available", "error")
			if it["status"] != "available" {
				t.Fatalf("backup ended %v", it)
			}
			checkItemShape(t, it)
			ei := it["extend_info"].(map[string]any)
			if ei["progress"].(float64) != 100 || ei["incremental"] != false || ei["size"].(float64) <= 0 {
				t.Errorf("extend_info progress/incremental/size: %v %v %v", ei["progress"], ei["incremental"], ei["size"])
			}
			vbs := ei["volume_backups"].([]any)
			if len(vbs) != len(paths) {
				t.Fatalf("%d volume_backups, want %d", len(vbs), len(paths))
			}
			sys := vbs[0].(map[string]any)
			if sys["bootable"] != true || sys["source_volume_id"] == "" || sys["source_volume_size"].(float64) != 1 || sys["status"] != "available" {
				t.Errorf("system disk backup: %v", sys)
			}
			bd := it["backup_data"].(map[string]any)
			if bd["vcpus"].(float64) != 2 || bd["ram"].(float64) != 4096 || bd["private_ip"] != "192.168.0.10" {
				t.Errorf("backup_data: %v", bd)
			}
			if it["name"] != "backup" || it["description"] != "backup des" || it["resource_id"] != serverID {
				t.Errorf("name/description/resource_id: %v %v %v", it["name"], it["description"], it["resource_id"])
			}
			// Some clients ask for the checkpoint id: it resolves to its one backup.
			if byCP := e.item(project, cp["id"].(string)); byCP == nil || byCP["id"] != id {
				t.Errorf("GET checkpoint_items/{checkpoint id} = %v, want backup %s", byCP, id)
			}
			if n := e.count(project, ""); n != 1 {
				t.Errorf("count %d, want 1", n)
			}
		})
	}
}

// checkItemShape checks the types Go clients decode strictly.
func checkItemShape(t *testing.T, it map[string]any) {
	t.Helper()
	for _, k := range []string{"checkpoint_id", "created_at", "id", "name", "resource_id", "status", "updated_at", "description", "resource_type"} {
		if _, ok := it[k].(string); !ok {
			t.Errorf("checkpoint_item.%s is not a string: %v", k, it[k])
		}
	}
	if _, ok := it["tags"].([]any); !ok {
		t.Errorf("tags is not a list: %v", it["tags"])
	}
	for _, k := range []string{"created_at", "updated_at"} {
		if !timeRe.MatchString(it[k].(string)) {
			t.Errorf("%s %q is not like 2017-04-18T01:21:52.701973", k, it[k])
		}
	}
	ei := it["extend_info"].(map[string]any)
	for _, k := range []string{"progress", "size", "average_speed", "space_saving_ratio"} {
		if _, ok := ei[k].(float64); !ok {
			t.Errorf("extend_info.%s is not a number: %v", k, ei[k])
		}
	}
	if _, ok := ei["fail_code"].(map[string]any); !ok {
		t.Errorf("extend_info.fail_code is not an object: %v", ei["fail_code"])
	}
	for _, k := range []string{"auto_trigger", "incremental", "support_lld"} {
		if _, ok := ei[k].(bool); !ok {
			t.Errorf("extend_info.%s is not a bool: %v", k, ei[k])
		}
	}
	for _, k := range []string{"resource_name", "resource_az", "image_type", "finished_at", "fail_reason", "fail_op", "taskid"} {
		if _, ok := ei[k].(string); !ok {
			t.Errorf("extend_info.%s is not a string: %v", k, ei[k])
		}
	}
	bd := it["backup_data"].(map[string]any)
	for _, k := range []string{"ram", "vcpus", "disk"} {
		if _, ok := bd[k].(float64); !ok {
			t.Errorf("backup_data.%s is not a number: %v", k, bd[k])
		}
	}
	for _, v := range ei["volume_backups"].([]any) {
		vb := v.(map[string]any)
		for _, k := range []string{"size", "source_volume_size", "average_speed", "space_saving_ratio"} {
			if _, ok := vb[k].(float64); !ok {
				t.Errorf("volume_backups[].%s is not a number: %v", k, vb[k])
			}
		}
	}
}

// TestProtectRefusals sends every kind of bad protect request: each is a
// 4xx with its documented code and creates nothing.
func TestProtectRefusals(t *testing.T) {
	e := newEnv(t)
	e.addServer(serverID, project, "ACTIVE", 8*mib)
	errored := newUUID()
	e.addServer(errored, project, "ERROR", 8*mib)
	diskless := newUUID()
	e.inv.Servers = append(e.inv.Servers, e.inv.Servers[0])
	e.inv.Servers[2].ID, e.inv.Servers[2].Name, e.inv.Servers[2].Volumes = diskless, "diskless", nil
	e.writeInventory()
	other := newUUID()
	e.addServer(other, "0c2a2ef0d1b34ad4a6c1e01fd0ae2a3c", "ACTIVE", 8*mib)
	e.start()

	path := func(proj, prov, server string) string {
		return fmt.Sprintf("/v1/%s/providers/%s/resources/%s/action", proj, prov, server)
	}
	ok := path(project, provider, serverID)
	long := strings.Repeat("a", 256)
	tags := func(n int) string {
		var s []string
		for i := 0; i < n; i++ {
			s = append(s, fmt.Sprintf(`{"key":"k%d","value":"v"}`, i))
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	cases := []struct {
		name   string
		path   string
		body   string
		status int
		code   string
		field  string // the message must name it
	}{
		{"malformed JSON", ok, `{"protect": {`, 400, "CSBS.9001", "JSON"},
		{"empty body", ok, ``, 400, "CSBS.9001", "body"},
		{"no protect", ok, `{"backup": {}}`, 400, "CSBS.9001", "protect"},
		{"name wrong type", ok, `{"protect": {"backup_name": 1}}`, 400, "CSBS.9001", "backup_name"},
		{"name empty", ok, `{"protect": {"backup_name": ""}}`, 400, "CSBS.9001", "backup_name"},
		{"name too long", ok, `{"protect": {"backup_name": "` + long + `"}}`, 400, "CSBS.9001", "backup_name"},
		{"name bad character", ok, `{"protect": {"backup_name": "my backup"}}`, 400, "CSBS.9001", "backup_name"},
		{"description too long", ok, `{"protect": {"description": "` + long + `"}}`, 400, "CSBS.9001", "description"},
		{"description with <", ok, `{"protect": {"description": "a<b"}}`, 400, "CSBS.9001", "description"},
		{"description with >", ok, `{"protect": {"description": "a>b"}}`, 400, "CSBS.9001", "description"},
		{"incremental not boolean", ok, `{"protect": {"incremental": "true"}}`, 400, "CSBS.9001", "incremental"},
		{"unsupported resource_type", ok, `{"protect": {"resource_type": "OS::Cinder::Volume"}}`, 400, "CSBS.6003", "OS::Cinder::Volume"},
		{"tags empty list", ok, `{"protect": {"tags": []}}`, 400, "CSBS.9001", "tags"},
		{"eleven tags", ok, `{"protect": {"tags": ` + tags(11) + `}}`, 400, "CSBS.7000", "tags"},
		{"duplicate tag keys", ok, `{"protect": {"tags": [{"key":"a","value":"1"},{"key":" a ","value":"2"}]}}`, 400, "CSBS.9001", "tags"},
		{"tag key too long", ok, `{"protect": {"tags": [{"key":"` + strings.Repeat("k", 37) + `","value":"v"}]}}`, 400, "CSBS.9001", "tags"},
		{"tag value too long", ok, `{"protect": {"tags": [{"key":"k","value":"` + strings.Repeat("v", 44) + `"}]}}`, 400, "CSBS.9001", "tags"},
		{"tag key bad character", ok, `{"protect": {"tags": [{"key":"a.b","value":"v"}]}}`, 400, "CSBS.9001", "tags"},
		{"tag empty key", ok, `{"protect": {"tags": [{"key":"  ","value":"v"}]}}`, 400, "CSBS.9001", "tags"},
		{"extra_info not object", ok, `{"protect": {"extra_info": "x"}}`, 400, "CSBS.9001", "extra_info"},
		{"unknown provider", path(project, "00000000-0000-0000-0000-000000000000", serverID), `{"protect": {}}`, 400, "CSBS.9001", "provider"},
		{"unknown server", path(project, provider, newUUID()), `{"protect": {}}`, 400, "CSBS.6000", "server"},
		{"server of another project", path(project, provider, other), `{"protect": {}}`, 400, "CSBS.6000", "server"},
		{"server in ERROR", path(project, provider, errored), `{"protect": {}}`, 400, "CSBS.6006", "ERROR"},
		{"server without disks", path(project, provider, diskless), `{"protect": {}}`, 400, "CSBS.6007", diskless},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", tc.path, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			m := r.json(t)
			if m["error_code"] != tc.code {
				t.Fatalf("error_code %v, want %s: %s", m["error_code"], tc.code, r.body)
			}
			if msg, _ := m["error_msg"].(string); !strings.Contains(msg, tc.field) {
				t.Fatalf("error_msg %q does not name %q", msg, tc.field)
			}
		})
	}
	if n := e.count(project, ""); n != 0 {
		t.Fatalf("refused requests created %d backups", n)
	}

	// A backup of a server that is already being backed up.
	_, first := e.protect(project, serverID, nil)
	r := e.do("POST", ok, `{"protect": {}}`)
	if r.status != 400 || r.json(t)["error_code"] != "CSBS.6005" {
		// The first may have finished already on a fast machine; then the
		// second is accepted, which is also right.
		if r.status != 200 {
			t.Fatalf("second backup while the first runs: %d %s", r.status, r.body)
		}
	}
	e.waitStatus(project, first, 60*time.Second, "available")

	// Other operations refuse bad input with a field name too.
	for _, q := range []string{"limit=0", "sort=size", "status=nope", "start_time=never", "marker=" + newUUID()} {
		r := e.do("GET", "/v1/"+project+"/checkpoint_items?"+q, nil)
		if r.status != 400 || r.json(t)["error_code"] != "CSBS.9001" {
			t.Errorf("list ?%s: %d %s, want 400 CSBS.9001", q, r.status, r.body)
		}
	}
	if r := e.do("GET", "/v1/"+project+"/checkpoint_items/"+newUUID(), nil); r.status != 404 || r.json(t)["error_code"] != "CSBS.3001" {
		t.Errorf("unknown backup: %d %s, want 404 CSBS.3001", r.status, r.body)
	}
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+newUUID(), nil); r.status != 404 || r.json(t)["error_code"] != "CSBS.3001" {
		t.Errorf("delete unknown checkpoint: %d %s, want 404 CSBS.3001", r.status, r.body)
	}
}

// TestIncremental backs up a server, rewrites 2 of its 4 MiB blocks, and
// backs it up again: the second backup is incremental, reports only the
// changed data and adds only the changed chunks to the repository.
func TestIncremental(t *testing.T) {
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 64*mib)
	e.start()

	_, full := e.protect(project, serverID, map[string]any{"backup_name": "full"})
	fi := e.waitStatus(project, full, 60*time.Second, "available")
	afterFull := e.repoBytes()
	fei := fi["extend_info"].(map[string]any)
	if fei["incremental"] != false {
		t.Fatalf("the first backup must be full: %v", fei)
	}
	usedMB := fei["size"].(float64)
	if usedMB < 15 || usedMB > 30 { // 2 MiB + 8 MiB + 8 MiB of data, rounded to whole chunks
		t.Errorf("full backup size %v MB, want the used data of the disk (about 18-24 MB)", usedMB)
	}

	// Rewrite two 4 MiB blocks with new random bytes.
	f, err := os.OpenFile(paths[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 4*mib)
	for _, off := range []int64{0, 40 * mib} {
		for i := range block {
			block[i] = byte(randInt(256))
		}
		f.WriteAt(block, off)
	}
	f.Close()

	_, inc := e.protect(project, serverID, map[string]any{"backup_name": "inc"})
	ii := e.waitStatus(project, inc, 60*time.Second, "available")
	iei := ii["extend_info"].(map[string]any)
	if iei["incremental"] != true {
		t.Fatalf("the second backup must be incremental: %v", iei)
	}
	if size := iei["size"].(float64); size != 8 {
		t.Errorf("incremental size %v MB, want 8 (two changed 4 MiB blocks)", size)
	}
	if grew := e.repoBytes() - afterFull; grew > 9*mib || grew < 8*mib {
		t.Errorf("the incremental backup added %d bytes to the repository, want about 8 MiB of random chunks", grew)
	}
	if r := iei["space_saving_ratio"].(float64); r < 50 {
		t.Errorf("space_saving_ratio %v, want most of the used data saved by dedup", r)
	}

	// incremental: false asks for a full backup: it reports the used data,
	// and still stores nothing the repository has.
	before := e.repoBytes()
	_, again := e.protect(project, serverID, map[string]any{"incremental": false})
	ai := e.waitStatus(project, again, 60*time.Second, "available")
	aei := ai["extend_info"].(map[string]any)
	if aei["incremental"] != false || aei["size"].(float64) < 15 {
		t.Errorf("full backup on request: incremental %v size %v", aei["incremental"], aei["size"])
	}
	if grew := e.repoBytes() - before; grew > 1*mib {
		t.Errorf("a full backup of unchanged data added %d bytes", grew)
	}
}

// TestListFiltersSortPaging creates backups of several servers and checks
// every filter, sort key and the paging links.
func TestListFiltersSortPaging(t *testing.T) {
	e := newEnv(t)
	a, b := serverID, newUUID()
	e.addServer(a, project, "ACTIVE", 4*mib)
	e.addServer(b, project, "ACTIVE", 4*mib)
	e.inv.Servers[1].AvailabilityZone = "az2"
	e.inv.Servers[1].PrivateIP = "192.168.7.7"
	e.writeInventory()
	other := newUUID()
	e.addServer(other, "0c2a2ef0d1b34ad4a6c1e01fd0ae2a3c", "ACTIVE", 4*mib)
	e.start()

	var ids []string
	var cps []string
	var middle time.Time
	for i := 0; i < 7; i++ {
		srv := a
		if i%2 == 1 {
			srv = b
		}
		cp, id := e.protect(project, srv, map[string]any{"backup_name": fmt.Sprintf("bk-%d-%s", i, map[bool]string{true: "even", false: "odd"}[i%2 == 0])})
		e.waitStatus(project, id, 60*time.Second, "available")
		ids, cps = append(ids, id), append(cps, cp)
		if i == 3 {
			time.Sleep(20 * time.Millisecond)
			middle = time.Now().UTC()
			time.Sleep(20 * time.Millisecond)
		}
	}
	e.protect("0c2a2ef0d1b34ad4a6c1e01fd0ae2a3c", other, nil)

	names := func(items []map[string]any) []string {
		var out []string
		for _, it := range items {
			out = append(out, it["name"].(string))
		}
		return out
	}
	idsOf := func(items []map[string]any) []string {
		var out []string
		for _, it := range items {
			out = append(out, it["id"].(string))
		}
		return out
	}
	mt := middle.Format("2006-01-02T15:04:05.000000")
	filters := []struct {
		query string
		want  int
	}{
		{"", 7},
		{"status=available", 7},
		{"status=error", 0},
		{"name=even", 4},
		{"name=EVEN", 4},
		{"name=bk-3", 1},
		{"resource_id=" + a, 4},
		{"resource_id=" + b, 3},
		{"resource_name=srv-" + b[:4], 3},
		{"az=az2", 3},
		{"az=az1", 4},
		{"checkpoint_id=" + cps[2], 1},
		{"resource_type=OS::Nova::Server", 7},
		{"image_type=backup", 7},
		{"image_type=image", 0},
		{"start_time=" + mt, 3},
		{"end_time=" + mt, 4},
		{"policy_id=" + newUUID(), 0},
		{"ip=192.168.7.7", 3}, // the SDK's ListOpts.VmIp sends ip on lists too
	}
	for _, f := range filters {
		if got := e.list(project, f.query); len(got) != f.want {
			t.Errorf("list ?%s: %d backups (%v), want %d", f.query, len(got), names(got), f.want)
		}
		if got := e.count(project, f.query); got != f.want {
			t.Errorf("count ?%s: %d, want %d", f.query, got, f.want)
		}
	}

	// Default order is newest first; sort keys and directions.
	if got := idsOf(e.list(project, "")); got[0] != ids[6] || got[6] != ids[0] {
		t.Errorf("default order is not created_at desc: %v", got)
	}
	if got := idsOf(e.list(project, "sort=created_at:asc")); got[0] != ids[0] || got[6] != ids[6] {
		t.Errorf("sort=created_at:asc: %v", got)
	}
	if got := names(e.list(project, "sort=name:asc")); got[0] != "bk-0-even" || got[6] != "bk-6-even" {
		t.Errorf("sort=name:asc: %v", got)
	}
	if got := names(e.list(project, "sort=name")); got[0] != "bk-6-even" {
		t.Errorf("sort=name (desc by default): %v", got)
	}
	for _, k := range []string{"updated_at", "status", "protected_at", "id"} {
		for _, dir := range []string{"asc", "desc"} {
			if got := e.list(project, "sort="+k+":"+dir); len(got) != 7 {
				t.Errorf("sort=%s:%s: %d backups", k, dir, len(got))
			}
		}
	}
	if got := idsOf(e.list(project, "sort=id:asc")); !sortedStrings(got) {
		t.Errorf("sort=id:asc not sorted: %v", got)
	}

	// Paging: follow next links with limit 3 and collect everything once.
	var seen []string
	url := e.base + "/v1/" + project + "/checkpoint_items?limit=3&sort=created_at:asc"
	pages := 0
	for url != "" && pages < 10 {
		r := e.do("GET", url, nil)
		var page struct {
			Items []map[string]any  `json:"checkpoint_items"`
			Links []json.RawMessage `json:"checkpoint_items_links"`
		}
		json.Unmarshal(r.body, &page)
		pages++
		seen = append(seen, idsOf(page.Items)...)
		url = ""
		for _, l := range page.Links {
			var link struct{ Rel, Href string }
			json.Unmarshal(l, &link)
			if link.Rel == "next" {
				url = link.Href
			}
		}
	}
	if pages != 3 || strings.Join(seen, ",") != strings.Join(ids, ",") {
		t.Errorf("paging by 3 took %d pages and gave %v, want 3 pages of %v", pages, seen, ids)
	}
	// marker and offset.
	if got := idsOf(e.list(project, "sort=created_at:asc&marker="+ids[1]+"&limit=2")); strings.Join(got, ",") != ids[2]+","+ids[3] {
		t.Errorf("marker: %v", got)
	}
	if got := idsOf(e.list(project, "sort=created_at:asc&offset=5")); strings.Join(got, ",") != ids[5]+","+ids[6] {
		t.Errorf("offset: %v", got)
	}

	// The backup a next link continues after is deleted between two pages:
	// the next page still comes (the SDK's List follows every link).
	r := e.do("GET", "/v1/"+project+"/checkpoint_items?limit=3&sort=created_at:asc", nil)
	var page struct {
		Links []struct{ Rel, Href string } `json:"checkpoint_items_links"`
	}
	if json.Unmarshal(r.body, &page); len(page.Links) != 1 || !strings.HasPrefix(page.Links[0].Href, e.base+"/v1/") {
		t.Fatalf("first page links: %s", r.body)
	}
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cps[2], nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e.waitStatus(project, ids[2], 30*time.Second, "gone")
	r = e.do("GET", page.Links[0].Href, nil)
	var next struct {
		Items []map[string]any `json:"checkpoint_items"`
	}
	if json.Unmarshal(r.body, &next); r.status != 200 || strings.Join(idsOf(next.Items), ",") != strings.Join(ids[3:6], ",") {
		t.Errorf("next page after its marker was deleted: %d %s, want %v", r.status, r.body, ids[3:6])
	}
}

// TestPublicURLLinks: behind a proxy, next links use auth.public_url, not
// the Host the request came with.
func TestPublicURLLinks(t *testing.T) {
	e := newEnv(t, "--auth-public-url", "https://backup.example.com/")
	e.addServer(serverID, project, "ACTIVE", 4*mib)
	e.start()
	for range 2 {
		_, id := e.protect(project, serverID, nil)
		e.waitStatus(project, id, 60*time.Second, "available")
	}
	for _, list := range []string{"checkpoint_items", "policies"} {
		if list == "policies" {
			for i := range 2 {
				if r := e.do("POST", "/v1/"+project+"/policies", polBody(fmt.Sprint("p", i), false, "FREQ=WEEKLY;BYDAY=MO;BYHOUR=3;BYMINUTE=0", nil)); r.status != 200 {
					t.Fatalf("create policy: %d %s", r.status, r.body)
				}
			}
		}
		r := e.do("GET", "/v1/"+project+"/"+list+"?limit=1", nil)
		var page map[string]json.RawMessage
		var links []struct{ Rel, Href string }
		json.Unmarshal(r.body, &page)
		json.Unmarshal(page[list+"_links"], &links)
		if len(links) != 1 || !strings.HasPrefix(links[0].Href, "https://backup.example.com/v1/"+project+"/"+list+"?") {
			t.Errorf("%s next link: %s, want it under https://backup.example.com", list, page[list+"_links"])
		}
	}
}

func sortedStrings(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] > s[i] {
			return false
		}
	}
	return true
}
