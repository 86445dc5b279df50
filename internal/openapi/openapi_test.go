package openapi

import (
	"encoding/json"
	"strings"
	"testing"
)

const doc = `{"openapi": "3.1.0", "paths": {"/x": {"get": {"responses": {"200": {"content": {"application/json": {
  "schema": {"$ref": "#/components/schemas/T"}, "example": {"n": 1, "s": "a"}}}}}}}},
  "components": {"schemas": {"T": {"type": "object", "required": ["n"], "properties": {
    "n": {"type": "integer", "minimum": 0, "maximum": 10},
    "s": {"type": ["string", "null"], "enum": ["a", "b", null]},
    "l": {"type": "array", "items": {"type": "boolean"}},
    "m": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}`

func TestCheck(t *testing.T) {
	d, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	schema, example, ok := d.Response("GET", "/x", "200")
	if !ok || example == nil {
		t.Fatal("Response found no schema and example")
	}
	tests := []struct {
		value string
		want  string // a part of the first error; "" for none
	}{
		{`{"n": 1, "s": "a"}`, ""},
		{`{"n": 1, "s": null, "l": [true], "m": {"k": "v"}, "other": 1}`, ""},
		{`{"s": "a"}`, `required key "n"`},
		{`{"n": 1.5}`, "not of type"},
		{`{"n": 11}`, "above the maximum"},
		{`{"n": -1}`, "below the minimum"},
		{`{"n": 1, "s": "c"}`, "not one of"},
		{`{"n": 1, "l": [1]}`, "$.l[0]"},
		{`{"n": 1, "m": {"k": 2}}`, "$.m.k"},
		{`[]`, "not of type"},
	}
	for _, tc := range tests {
		var v any
		if err := json.Unmarshal([]byte(tc.value), &v); err != nil {
			t.Fatal(err)
		}
		errs := d.Check(schema, v, "")
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("Check(%s) = %v, want none", tc.value, errs)
		case tc.want != "" && (len(errs) == 0 || !strings.Contains(errs[0].Error(), tc.want)):
			t.Errorf("Check(%s) = %v, want an error with %q", tc.value, errs, tc.want)
		}
	}
	var v any
	json.Unmarshal([]byte(`{"n": 1, "extra": true}`), &v)
	if got := d.Undocumented(schema, v, ""); len(got) != 1 || got[0] != "$.extra" {
		t.Errorf("Undocumented = %v, want [$.extra]", got)
	}
	if _, _, ok := d.Response("GET", "/nope", "200"); ok {
		t.Error("Response of a missing path reported ok")
	}
}
