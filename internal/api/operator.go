package api

import (
	_ "embed"
	"net/http"
	"strings"
	"time"
)

// The operator's routes, outside /v1 and outside authentication: the
// Prometheus metrics and the OpenAPI description of the API.

// OpenAPI is the OpenAPI 3.1 description of every operation the API
// serves (the reference's and the extensions), served at GET /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// RequestObserver is told of every answered request, for metrics. route
// is the pattern that matched ("/v1/{project_id}/checkpoint_items"), or ""
// when none did; it is never the raw path, so its values are bounded.
// Request is called on the request's goroutine and must return quickly.
type RequestObserver interface {
	Request(route, method string, code int, d time.Duration)
}

// WithMetrics makes the server tell o of every request and serve h at
// GET /metrics, without authentication (scrapers carry no token; the
// metrics name no secret and no project's data beyond ids).
func WithMetrics(o RequestObserver, h http.Handler) Option {
	return func(s *Server) {
		s.observe, s.metrics = o, h
	}
}

func (s *Server) operatorRoutes() {
	if s.metrics != nil {
		s.mux.Handle("GET /metrics", s.metrics)
	}
	s.mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(OpenAPI)
	})
}

// observeRequest tells the observer about a request answered with code.
// ar is the request the mux served (it carries the pattern that matched),
// or nil when the request was refused before routing.
func (s *Server) observeRequest(r, ar *http.Request, code int, d time.Duration) {
	if s.observe == nil {
		return
	}
	pattern := ""
	if ar != nil {
		pattern = ar.Pattern
	}
	if pattern == "" {
		_, pattern = s.mux.Handler(r)
	}
	if _, path, ok := strings.Cut(pattern, " "); ok {
		pattern = path // the method is a label of its own
	}
	if pattern == "/" {
		pattern = "" // the fallback: no operation matched
	}
	s.observe.Request(pattern, r.Method, code, d)
}
