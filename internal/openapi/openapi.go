// Package openapi reads the OpenAPI document of the API (internal/api's
// openapi.json) and checks JSON values against its schemas. Tests use it
// to keep the document true: its examples must fit its schemas, and real
// responses must fit both.
//
// Only the subset of JSON Schema the document uses is checked: type (one
// or a list), required, properties, items, enum, const, minimum, maximum,
// and $ref to #/components/schemas. Unknown keywords are ignored.
package openapi

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Doc is a parsed OpenAPI document.
type Doc struct {
	raw     map[string]any
	schemas map[string]any
}

// Parse reads an OpenAPI document.
func Parse(b []byte) (*Doc, error) {
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	d := &Doc{raw: raw}
	if c, ok := raw["components"].(map[string]any); ok {
		d.schemas, _ = c["schemas"].(map[string]any)
	}
	return d, nil
}

// Response returns the JSON schema and example (nil when none) of the
// response with status code of the operation method path (a path of the
// document, like /v1/{project_id}/checkpoint_items), or ok false.
func (d *Doc) Response(method, path, code string) (schema, example any, ok bool) {
	paths, _ := d.raw["paths"].(map[string]any)
	ops, _ := paths[path].(map[string]any)
	op, _ := ops[strings.ToLower(method)].(map[string]any)
	rs, _ := op["responses"].(map[string]any)
	r, _ := rs[code].(map[string]any)
	c, _ := r["content"].(map[string]any)
	mt, _ := c["application/json"].(map[string]any)
	if mt == nil {
		return nil, nil, false
	}
	return mt["schema"], mt["example"], true
}

// Check returns what is wrong with v (decoded JSON) against schema; at
// names where v is, for the messages.
func (d *Doc) Check(schema, v any, at string) []error {
	if at == "" {
		at = "$"
	}
	s, _ := schema.(map[string]any)
	if s == nil {
		return nil
	}
	if ref, ok := s["$ref"].(string); ok {
		name, found := strings.CutPrefix(ref, "#/components/schemas/")
		target, ok := d.schemas[name]
		if !found || !ok {
			return []error{fmt.Errorf("%s: unresolved $ref %s", at, ref)}
		}
		return d.Check(target, v, at)
	}
	var errs []error
	if t, ok := s["type"]; ok && !typeOK(t, v) {
		return []error{fmt.Errorf("%s: %s is not of type %v", at, kind(v), t)}
	}
	if e, ok := s["enum"].([]any); ok && v != nil && !slices.ContainsFunc(e, func(x any) bool { return x == v }) {
		errs = append(errs, fmt.Errorf("%s: %v is not one of %v", at, v, e))
	}
	if c, ok := s["const"]; ok && c != v {
		errs = append(errs, fmt.Errorf("%s: %v is not %v", at, v, c))
	}
	if n, ok := v.(float64); ok {
		if m, ok := s["minimum"].(float64); ok && n < m {
			errs = append(errs, fmt.Errorf("%s: %v is below the minimum %v", at, n, m))
		}
		if m, ok := s["maximum"].(float64); ok && n > m {
			errs = append(errs, fmt.Errorf("%s: %v is above the maximum %v", at, n, m))
		}
	}
	switch x := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		if req, ok := s["required"].([]any); ok {
			for _, k := range req {
				if _, ok := x[k.(string)]; !ok {
					errs = append(errs, fmt.Errorf("%s: required key %q is missing", at, k))
				}
			}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ps, ok := props[k]; ok {
				errs = append(errs, d.Check(ps, x[k], at+"."+k)...)
			} else if ap, ok := s["additionalProperties"]; ok {
				errs = append(errs, d.Check(ap, x[k], at+"."+k)...)
			}
		}
	case []any:
		if items, ok := s["items"]; ok {
			for i, e := range x {
				errs = append(errs, d.Check(items, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return errs
}

// Undocumented returns the keys of objects in v that schema does not name
// (a response grew a field the document lacks). Objects whose schema
// names no properties are open and not reported.
func (d *Doc) Undocumented(schema, v any, at string) []string {
	if at == "" {
		at = "$"
	}
	s, _ := schema.(map[string]any)
	if ref, ok := s["$ref"].(string); ok {
		name, _ := strings.CutPrefix(ref, "#/components/schemas/")
		return d.Undocumented(d.schemas[name], v, at)
	}
	var out []string
	switch x := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for k, e := range x {
			ps, ok := props[k]
			switch {
			case ok:
				out = append(out, d.Undocumented(ps, e, at+"."+k)...)
			case len(props) > 0:
				out = append(out, at+"."+k)
			}
		}
	case []any:
		for i, e := range x {
			out = append(out, d.Undocumented(s["items"], e, fmt.Sprintf("%s[%d]", at, i))...)
		}
	}
	sort.Strings(out)
	return out
}

func typeOK(t, v any) bool {
	switch tt := t.(type) {
	case string:
		return is(tt, v)
	case []any:
		return slices.ContainsFunc(tt, func(x any) bool { s, _ := x.(string); return is(s, v) })
	}
	return true
}

func is(t string, v any) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		n, ok := v.(float64)
		return ok && n == float64(int64(n))
	case "null":
		return v == nil
	}
	return false
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}
