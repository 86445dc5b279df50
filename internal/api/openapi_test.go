package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/auth"
	"github.com/csbs/csbs/internal/openapi"
	"github.com/csbs/csbs/internal/store"
)

// openAPIDoc is the part of the document the tests read.
type openAPIDoc struct {
	OpenAPI string                          `json:"openapi"`
	Paths   map[string]map[string]openAPIOp `json:"paths"`
	checker *openapi.Doc
}

type openAPIOp struct {
	OperationID string `json:"operationId"`
	Summary     string `json:"summary"`
	Responses   map[string]struct {
		Content map[string]struct {
			Schema  any `json:"schema"`
			Example any `json:"example"`
		} `json:"content"`
	} `json:"responses"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var d openAPIDoc
	if err := json.Unmarshal(OpenAPI, &d); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	c, err := openapi.Parse(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	d.checker = c
	if d.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q, want 3.1.0", d.OpenAPI)
	}
	return d
}

// fullServer is a server with every optional route: the builtin identity's
// /v3 and the operator's /metrics.
func fullServer(t *testing.T) *Server {
	t.Helper()
	db, err := store.Open(context.Background(), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b, err := auth.NewBuiltin(auth.BuiltinConfig{Key: make([]byte, 32), Revocations: db,
		Users: []auth.User{{Name: "u", Password: "p", Projects: []auth.Project{{ID: "p1", Name: "p1", Roles: []string{"member"}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)),
		WithAuth(b, "r1"), WithMetrics(nil, http.NotFoundHandler()))
}

// TestOpenAPIRoutes: every route the API serves is described, with a
// summary and a success response, and every operation the document names
// is served.
func TestOpenAPIRoutes(t *testing.T) {
	d := loadOpenAPI(t)
	served := map[string]bool{}
	for _, r := range Routes() {
		key := r.Method + " " + r.Pattern
		served[key] = true
		op, ok := d.Paths[r.Pattern][strings.ToLower(r.Method)]
		if !ok {
			t.Errorf("route %s is served but openapi.json does not describe it", key)
			continue
		}
		if op.Summary == "" || op.OperationID == "" {
			t.Errorf("%s: no summary or operationId", key)
		}
		if !slices.ContainsFunc(slices.Collect(mapsKeys(op.Responses)), func(c string) bool { return strings.HasPrefix(c, "2") }) {
			t.Errorf("%s: no success response described", key)
		}
		if _, ok := op.Responses["400"]; !ok {
			t.Errorf("%s: the refusals (400) are not described", key)
		}
	}
	s := fullServer(t)
	ids := map[string]bool{}
	for path, ops := range d.Paths {
		for method, op := range ops {
			key := strings.ToUpper(method) + " " + path
			if ids[op.OperationID] {
				t.Errorf("%s: operationId %q used twice", key, op.OperationID)
			}
			ids[op.OperationID] = true
			if strings.HasPrefix(path, "/v1/") {
				if !served[key] {
					t.Errorf("openapi.json describes %s, which the API does not serve", key)
				}
				continue
			}
			// Outside /v1: ask the mux which pattern answers.
			req := httptest.NewRequest(strings.ToUpper(method), path, nil)
			if _, pattern := s.mux.Handler(req); pattern != key {
				t.Errorf("openapi.json describes %s, but the mux answers it with %q", key, pattern)
			}
		}
	}
}

// TestOpenAPIRefs: every $ref points at a schema of the document.
func TestOpenAPIRefs(t *testing.T) {
	d := loadOpenAPI(t)
	refs := regexp.MustCompile(`"\$ref":\s*"(#/components/schemas/[^"]+)"`).FindAllSubmatch(OpenAPI, -1)
	if len(refs) == 0 {
		t.Fatal("no $ref at all")
	}
	for _, m := range refs {
		if errs := d.checker.Check(map[string]any{"$ref": string(m[1])}, nil, ""); len(errs) > 0 && strings.Contains(errs[0].Error(), "unresolved") {
			t.Errorf("%v", errs[0])
		}
	}
}

// TestOpenAPIExamples: every response example fits its schema (the e2e
// test checks the examples against real responses).
func TestOpenAPIExamples(t *testing.T) {
	d := loadOpenAPI(t)
	n := 0
	for path, ops := range d.Paths {
		for method, op := range ops {
			for code, r := range op.Responses {
				for _, c := range r.Content {
					if c.Example == nil {
						continue
					}
					n++
					where := fmt.Sprintf("%s %s %s", strings.ToUpper(method), path, code)
					for _, err := range d.checker.Check(c.Schema, c.Example, "") {
						t.Errorf("%s: example: %v", where, err)
					}
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d response examples; want the main operations to have one", n)
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !yield(k) {
				return
			}
		}
	}
}
