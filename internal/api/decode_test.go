package api

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/service"
)

func TestProtectBodyRefusals(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		field string // the refusal must name it
	}{
		{"empty body", ``, "body"},
		{"not JSON", `{"protect": `, "body"},
		{"not an object", `[1,2]`, "body"},
		{"no protect", `{}`, "protect"},
		{"protect not object", `{"protect": "x"}`, "protect"},
		{"name not string", `{"protect": {"backup_name": 5}}`, "backup_name"},
		{"empty name", `{"protect": {"backup_name": ""}}`, "backup_name"},
		{"incremental not bool", `{"protect": {"incremental": "yes"}}`, "incremental"},
		{"description not string", `{"protect": {"description": []}}`, "description"},
		{"empty resource_type", `{"protect": {"resource_type": ""}}`, "resource_type"},
		{"tags not list", `{"protect": {"tags": {}}}`, "tags"},
		{"tag without key", `{"protect": {"tags": [{"value": "v"}]}}`, "tags"},
		{"tag without value", `{"protect": {"tags": [{"key": "k"}]}}`, "tags"},
		{"tag key number", `{"protect": {"tags": [{"key": 1, "value": "v"}]}}`, "key"},
		{"extra_info list", `{"protect": {"extra_info": [1]}}`, "extra_info"},
		{"extra_info string", `{"protect": {"extra_info": "x"}}`, "extra_info"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b protectBody
			err := decodeBytes([]byte(tc.body), &b)
			if err == nil {
				_, err = b.request()
			}
			e, ok := service.AsError(err)
			if !ok {
				t.Fatalf("got %v, want a refusal", err)
			}
			if e.Status != 400 || !strings.Contains(e.Msg, tc.field) {
				t.Fatalf("got %d %q, want 400 naming %q", e.Status, e.Msg, tc.field)
			}
		})
	}
}

func TestProtectBodyAccepts(t *testing.T) {
	var b protectBody
	body := `{"protect": {"backup_name": "backup", "description": "backup des", "incremental": false,
		"tags": [{"key": " k ", "value": ""}], "extra_info": {"a": 1}, "unknown_field": true}}`
	if err := decodeBytes([]byte(body), &b); err != nil {
		t.Fatal(err)
	}
	req, err := b.request()
	if err != nil {
		t.Fatal(err)
	}
	if req.BackupName != "backup" || req.Description != "backup des" || req.Incremental == nil || *req.Incremental ||
		len(req.Tags) != 1 || req.Tags[0].Key != " k " || string(req.ExtraInfo) != `{"a": 1}` {
		t.Fatalf("decoded %+v", req)
	}
}

func TestItemFilterRefusals(t *testing.T) {
	cases := []struct {
		query string
		field string
	}{
		{"status=bogus", "status"},
		{"limit=0", "limit"},
		{"limit=-3", "limit"},
		{"limit=ten", "limit"},
		{"offset=-1", "offset"},
		{"sort=size", "sort"},
		{"sort=name:up", "sort"},
		{"sort=" + strings.Repeat("id,", 90), "sort"},
		{"start_time=yesterday", "start_time"},
		{"end_time=2017-13-01T00:00:00", "end_time"},
		{"all_tenants=maybe", "all_tenants"},
	}
	for _, tc := range cases {
		q, _ := url.ParseQuery(tc.query)
		_, err := itemFilter(q, false)
		e, ok := service.AsError(err)
		if !ok || e.Status != 400 || !strings.Contains(e.Msg, tc.field) {
			t.Errorf("%s: got %v, want a 400 naming %s", tc.query, err, tc.field)
		}
	}
}

func TestItemFilterParses(t *testing.T) {
	q, _ := url.ParseQuery("status=available&ip=10.0.0.7&name=bk&limit=5&offset=2&marker=m&sort=name:asc,created_at&start_time=2017-04-18T01:21:52.701973&end_time=2017-04-19T00:00:00&all_tenants=false")
	f, err := itemFilter(q, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.Statuses, []string{"available"}) || f.IP != "10.0.0.7" || f.Name != "bk" || f.Limit != 5 || f.Offset != 2 || f.Marker != "m" ||
		len(f.Sort) != 2 || f.Sort[0].Key != "name" || f.Sort[0].Desc || !f.Sort[1].Desc ||
		f.StartTime == nil || f.StartTime.Nanosecond() != 701973000 || f.EndTime == nil {
		t.Fatalf("parsed %+v", f)
	}
	// A queued backup shows as protecting (deleting), so the filter finds it.
	for st, want := range map[string][]string{
		"protecting":      {"protecting", "waiting_protect"},
		"waiting_protect": {"waiting_protect"},
		"deleting":        {"deleting", "waiting_delete"},
		"error":           {"error"},
	} {
		q, _ = url.ParseQuery("status=" + st)
		if f, err := itemFilter(q, true); err != nil || !slices.Equal(f.Statuses, want) {
			t.Errorf("status=%s: statuses %v, %v; want %v", st, f.Statuses, err, want)
		}
	}
	q, _ = url.ParseQuery("")
	if f, _ := itemFilter(q, false); f.Limit != defaultLimit {
		t.Fatalf("default limit %d, want %d", f.Limit, defaultLimit)
	}
}

// FuzzDecodeProtect feeds arbitrary bodies to the protect decoder: it must
// refuse or accept, never panic.
func FuzzDecodeProtect(f *testing.F) {
	for _, s := range []string{
		`{"protect": {"backup_name": "backup", "description": "backup des", "extra_info": {}}}`,
		`{"protect": {"tags": [{"key": "k", "value": "v"}], "incremental": true, "resource_type": "OS::Nova::Server"}}`,
		`{"protect": null}`, `[]`, `{"protect": {"tags": []}}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b protectBody
		if err := decodeBytes(body, &b); err != nil {
			if _, ok := service.AsError(err); !ok {
				t.Fatalf("decode error is not a refusal: %v", err)
			}
			return
		}
		if _, err := b.request(); err != nil {
			if _, ok := service.AsError(err); !ok {
				t.Fatalf("request error is not a refusal: %v", err)
			}
		}
	})
}

// FuzzDecodeResourcesAction feeds arbitrary bodies to the check decoder.
func FuzzDecodeResourcesAction(f *testing.F) {
	for _, s := range []string{
		`{"check_protectable": [{"resource_id": "6507cb66-90dc-4a12-a573-c9f3398f899d", "resource_type": "OS::Nova::Server"}]}`,
		`{"check_restorable": []}`, `{}`, `{"check_protectable": null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b resourcesBody
		if err := decodeBytes(body, &b); err != nil {
			if _, ok := service.AsError(err); !ok {
				t.Fatalf("decode error is not a refusal: %v", err)
			}
		}
	})
}

// FuzzItemFilter feeds arbitrary query strings to the list decoder.
func FuzzItemFilter(f *testing.F) {
	f.Add("status=available&limit=10&sort=created_at:asc,name&marker=x&offset=1")
	f.Add("start_time=2017-04-18T01:21:52.701973&all_tenants=true")
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		for _, count := range []bool{false, true} {
			if _, err := itemFilter(q, count); err != nil {
				if _, ok := service.AsError(err); !ok {
					t.Fatalf("filter error is not a refusal: %v", err)
				}
			}
		}
	})
}
