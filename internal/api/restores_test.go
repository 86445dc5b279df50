package api

import (
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/service"
)

const exampleRestore = `{
  "restore" : {
    "provider_id" : "fc4d5750-22e7-4798-8a46-f48f62c4c1da",
    "checkpoint_id" : "a2b9fb53-2770-4fcd-9bad-6cadd56e6c09",
    "parameters" : {
      "checkpoint_item_id" : "504b7d59-c361-411f-9ed3-814f35d08e3d",
      "power_on" : true,
      "targets" : {
        "server_id" : "f45c477a-57e5-465f-999f-d845083962db",
        "volumes" : [ {
          "backup_id" : "bc118c24-3234-4afd-8423-d66d3d677649",
          "volume_id" : "ee27f809-6fb5-40ae-ac46-c932bb4ee8fe"
        }]
      }
    }
  }
}`

func TestRestoreRequest(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		field string // named by the refusal; "" = accepted
	}{
		{"reference example", exampleRestore, ""},
		{"no volumes, no power_on", `{"restore": {"provider_id": "fc4d5750-22e7-4798-8a46-f48f62c4c1da", "checkpoint_id": "c", "parameters": {"checkpoint_item_id": "i", "targets": {"server_id": "s"}}}}`, ""},
		{"no restore", `{}`, "restore"},
		{"no provider", `{"restore": {"checkpoint_id": "c"}}`, "provider_id"},
		{"other provider", `{"restore": {"provider_id": "x", "checkpoint_id": "c"}}`, "provider"},
		{"no checkpoint", `{"restore": {"provider_id": "fc4d5750-22e7-4798-8a46-f48f62c4c1da"}}`, "checkpoint_id"},
		{"no parameters", `{"restore": {"provider_id": "fc4d5750-22e7-4798-8a46-f48f62c4c1da", "checkpoint_id": "c"}}`, "parameters"},
		{"no item", `{"restore": {"provider_id": "fc4d5750-22e7-4798-8a46-f48f62c4c1da", "checkpoint_id": "c", "parameters": {}}}`, "checkpoint_item_id"},
		{"no targets", `{"restore": {"provider_id": "fc4d5750-22e7-4798-8a46-f48f62c4c1da", "checkpoint_id": "c", "parameters": {"checkpoint_item_id": "i"}}}`, "targets"},
		{"no server", `{"restore": {"provider_id": "fc4d5750-22e7-4798-8a46-f48f62c4c1da", "checkpoint_id": "c", "parameters": {"checkpoint_item_id": "i", "targets": {}}}}`, "server_id"},
		{"mapping without volume_id", `{"restore": {"provider_id": "fc4d5750-22e7-4798-8a46-f48f62c4c1da", "checkpoint_id": "c", "parameters": {"checkpoint_item_id": "i", "targets": {"server_id": "s", "volumes": [{"backup_id": "b"}]}}}}`, "volumes"},
		{"power_on a string", `{"restore": {"provider_id": "fc4d5750-22e7-4798-8a46-f48f62c4c1da", "checkpoint_id": "c", "parameters": {"checkpoint_item_id": "i", "power_on": "yes"}}}`, "power_on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b restoreBody
			err := decodeBytes([]byte(tt.body), &b)
			var req service.RestoreRequest
			if err == nil {
				req, err = b.request()
			}
			if tt.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if req.ItemID == "" || req.ServerID == "" || !req.PowerOn {
					t.Fatalf("request %+v", req)
				}
				return
			}
			e, ok := service.AsError(err)
			if !ok || e.Status != 400 || !strings.Contains(e.Msg, tt.field) {
				t.Fatalf("got %v, want a 400 naming %s", err, tt.field)
			}
		})
	}
}

// FuzzDecodeRestore feeds arbitrary bodies to the restore decoder: every
// failure is a refusal, never a panic or a 500.
func FuzzDecodeRestore(f *testing.F) {
	for _, s := range []string{exampleRestore, `{"restore": null}`, `{"restore": {"parameters": {"targets": {"volumes": [{}]}}}}`, `[]`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b restoreBody
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

// FuzzCheckRestorable feeds arbitrary check_restorable lists to its decoder.
func FuzzCheckRestorable(f *testing.F) {
	f.Add([]byte(`[{"checkpoint_item_id": "i", "target": {"resource_id": "r", "resource_type": "OS::Nova::Server", "volumes": [{"backup_id": "b", "volume_id": "v"}]}}]`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var p []restorableParam
		if err := decodeBytes(body, &p); err != nil {
			if _, ok := service.AsError(err); !ok {
				t.Fatalf("decode error is not a refusal: %v", err)
			}
		}
	})
}
