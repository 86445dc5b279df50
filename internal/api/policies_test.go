package api

import (
	"net/url"
	"testing"

	"github.com/csbs/csbs/internal/service"
)

func TestFlexNumbers(t *testing.T) {
	for _, tc := range []struct {
		body string
		max  int // -1000 = refused
		perm string
	}{
		{`{"policy": {"scheduled_operations": [{"operation_definition": {"max_backups": 20, "permanent": false}}]}}`, 20, "false"},
		{`{"policy": {"scheduled_operations": [{"operation_definition": {"max_backups": "20", "permanent": "False"}}]}}`, 20, "false"},
		{`{"policy": {"scheduled_operations": [{"operation_definition": {"max_backups": " -1 ", "permanent": "true"}}]}}`, -1, "true"},
		{`{"policy": {"scheduled_operations": [{"operation_definition": {"max_backups": 2.5}}]}}`, -1000, ""},
		{`{"policy": {"scheduled_operations": [{"operation_definition": {"max_backups": "x"}}]}}`, -1000, ""},
		{`{"policy": {"scheduled_operations": [{"operation_definition": {"permanent": "maybe"}}]}}`, -1000, ""},
	} {
		var b policyBody
		err := decodeBytes([]byte(tc.body), &b)
		if tc.max == -1000 {
			e, ok := service.AsError(err)
			if !ok || e.Code != service.CodeInvalidParam {
				t.Errorf("%s: %v, want a CSBS.9001 refusal", tc.body, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		req, err := b.request()
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		d := (*req.Operations)[0].Definition
		if d.MaxBackups == nil || *d.MaxBackups != tc.max {
			t.Errorf("%s: max_backups %v", tc.body, d.MaxBackups)
		}
		if tc.perm != "" && (d.Permanent == nil || (*d.Permanent) != (tc.perm == "true")) {
			t.Errorf("%s: permanent %v", tc.body, d.Permanent)
		}
	}
}

func FuzzDecodePolicy(f *testing.F) {
	for _, s := range []string{
		`{"policy": {"name": "my-plan", "provider_id": "fc4d5750-22e7-4798-8a46-f48f62c4c1da", "parameters": {"common": {}},
		  "scheduled_operations": [{"name": "n", "enabled": true, "operation_definition": {"max_backups": 20},
		  "trigger": {"properties": {"pattern": "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"}},
		  "operation_type": "backup"}], "resources": [{"id": "x", "type": "OS::Nova::Server", "name": "r"}], "tags": [{"key": "k", "value": "v"}]}}`,
		`{"policy": {"scheduled_operations": [{"id": "x", "trigger": {}}]}}`, `{"policy": null}`, `[]`,
		`{"checkpoint": {"plan_id": "p", "parameters": {"auto_trigger": true, "resources": ["a"]}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b policyBody
		if err := decodeBytes(body, &b); err == nil {
			if _, err := b.request(); err != nil {
				if _, ok := service.AsError(err); !ok {
					t.Fatalf("request error is not a refusal: %v", err)
				}
			}
		} else if _, ok := service.AsError(err); !ok {
			t.Fatalf("decode error is not a refusal: %v", err)
		}
		var e executeBody
		if err := decodeBytes(body, &e); err != nil {
			if _, ok := service.AsError(err); !ok {
				t.Fatalf("decode error is not a refusal: %v", err)
			}
		}
	})
}

func FuzzPolicyFilter(f *testing.F) {
	for _, s := range []string{"sort=created_at:asc&limit=3&offset=3", "name=x&marker=y", "sort=size", "limit=-1", "all_tenants=maybe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		f, err := policyFilter(v)
		if err != nil {
			if _, ok := service.AsError(err); !ok {
				t.Fatalf("error is not a refusal: %v", err)
			}
			return
		}
		if f.Limit <= 0 || f.Limit > defaultLimit || f.Offset < 0 {
			t.Fatalf("filter out of range: %+v", f)
		}
	})
}
