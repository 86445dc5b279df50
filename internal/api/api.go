// Package api serves the CSBS v1 REST API over HTTP: it routes requests,
// decodes and checks their JSON, calls the service, and writes responses in
// the shapes of the public CSBS API reference. Refusals are
// written as {"error_code": "CSBS.xxxx", "error_msg": "…"} with the status
// the reference gives for the code; bad input never gets a 500.
package api

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/logging"
	"github.com/csbs/csbs/internal/service"
)

// maxBody bounds request bodies; the largest legitimate one is a few KB.
const maxBody = 1 << 20

// TimeFormat is how the API writes times: UTC, no zone, microseconds.
const TimeFormat = "2006-01-02T15:04:05.000000"

// Server is the HTTP front of a Service.
type Server struct {
	svc *service.Service
	log *slog.Logger
	mux *http.ServeMux

	ident     *identity    // nil: auth.mode none
	publicURL string       // base of the links the server returns; "": from the request
	console   http.Handler // serves /console/; nil: not served
	patterns  []string     // of every route registered with handle

	observe RequestObserver // nil: no metrics
	metrics http.Handler    // serves GET /metrics; nil: not served

	cache *responseCache // answers to backup polls
}

// New returns the API of svc.
func New(svc *service.Service, log *slog.Logger, opts ...Option) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{svc: svc, log: log, mux: http.NewServeMux(), cache: newResponseCache(svc.Generation)}
	for _, o := range opts {
		o(s)
	}
	s.routes()
	if s.console != nil {
		s.mux.Handle("/console/", s.console)
		s.mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	}
	return s
}

func (s *Server) routes() {
	const p = "/v1/{project_id}"
	s.handle("POST "+p+"/providers/{provider_id}/resources/{resource_id}/action", s.resourceAction)
	s.handle("POST "+p+"/providers/{provider_id}/resources/action", s.resourcesAction)
	s.handle("GET "+p+"/checkpoint_items", s.listItems)
	s.handle("GET "+p+"/checkpoint_items/count", s.countItems)
	s.handle("GET "+p+"/checkpoint_items/{checkpoint_item_id}", s.getItem)
	s.handle("GET "+p+"/checkpoint_items/{checkpoint_item_id}/volumes/{volume_id}/data", s.volumeData)
	s.handle("DELETE "+p+"/providers/{provider_id}/checkpoints/{checkpoint_id}", s.deleteCheckpoint)
	s.identityRoutes()
	s.handle("POST "+p+"/restores", s.createRestore)
	s.handle("GET "+p+"/restores", s.listRestores)
	s.handle("GET "+p+"/restores/{restore_id}", s.getRestore)
	s.tagRoutes(p, service.TagKindBackup)
	s.tagRoutes(p, service.TagKindPolicy)
	s.handle("GET "+p+"/quotas", s.quotas)
	s.handle("GET "+p+"/operation_logs", s.listOperationLogs)
	s.handle("GET "+p+"/operation_logs/{operation_log_id}", s.getOperationLog)
	s.handle("DELETE "+p+"/operation_logs/{operation_log_id}", s.deleteOperationLog)
	s.handle("DELETE "+p+"/operation_logs", s.deleteOperationLogs)
	s.policyRoutes(p)
	s.handle("POST "+p+"/verifications", s.verify)
	s.handle("GET "+p+"/verifications", s.listVerifications)
	s.handle("GET "+p+"/kept_clones", s.listKeptClones)
	s.handle("DELETE "+p+"/kept_clones", s.dropKeptClones)
	s.operatorRoutes()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &service.Error{Code: service.CodeInvalidParam, Status: http.StatusNotFound,
			Msg: fmt.Sprintf("no operation %s %s in the CSBS v1 API", r.Method, r.URL.Path)})
	})
}

// handlerFunc is an API handler: it returns the refusal or failure to write.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle registers h, checking the path parameters every operation shares.
func (s *Server) handle(pattern string, h handlerFunc) {
	s.patterns = append(s.patterns, pattern)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		err := checkProject(r.PathValue("project_id"))
		if err == nil && strings.Contains(pattern, "{provider_id}") {
			err = checkProvider(r.PathValue("provider_id"))
		}
		if err == nil {
			err = h(w, r)
		}
		if err != nil {
			s.fail(w, r, err)
		}
	})
}

// ServeHTTP adds a request id, recovers panics as 500s without a trace, and
// logs one line per request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Request-Id")
	if id == "" || len(id) > 64 {
		id = requestID()
	}
	w.Header().Set("X-Request-Id", id)
	// Lines that handlers log with the request's context name it too.
	r = r.WithContext(logging.With(r.Context(), "request_id", id))
	rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	start := time.Now()
	var ar *http.Request
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic serving request", "request_id", id, "panic", fmt.Sprint(v))
			writeError(rw, &service.Error{Code: service.CodeInternal, Status: 500, Msg: "request failed; see the service log for request " + id})
		}
		s.log.Debug("request", "request_id", id, "method", r.Method, "path", r.URL.Path,
			"status", rw.status, "ms", time.Since(start).Milliseconds())
		s.observeRequest(r, ar, rw.status, time.Since(start))
	}()
	r.Body = http.MaxBytesReader(rw, r.Body, maxBody)
	ar = s.authorize(rw, r)
	if ar == nil {
		return // refused
	}
	s.mux.ServeHTTP(rw, ar)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func requestID() string {
	var b [8]byte
	rand.Read(b[:])
	return "req-" + hex.EncodeToString(b[:])
}

// fail writes err: a *service.Error as itself, anything else as a 500 that
// points at the log (where the cause is) and tells nothing else.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if e, ok := service.AsError(err); ok {
		writeError(w, e)
		return
	}
	id := w.Header().Get("X-Request-Id")
	s.log.Error("request failed", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, &service.Error{Code: service.CodeInternal, Status: 500, Msg: "request failed; see the service log for request " + id})
}

func writeError(w http.ResponseWriter, e *service.Error) {
	writeJSON(w, e.Status, map[string]string{"error_code": e.Code, "error_msg": e.Msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := encodeJSON(v)
	if err != nil {
		return err
	}
	return writeRaw(w, status, body)
}

// encodeJSON is how every answer is encoded: HTML characters unescaped.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return buf.Bytes(), nil
}

// writeRaw writes an encoded JSON answer.
func writeRaw(w http.ResponseWriter, status int, body []byte) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body) // an error means the client went away; nothing to tell it
	return nil
}

// decode reads a JSON object body into v. Its refusals name what was wrong:
// the offset of a syntax error, the field of a wrong type.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return service.InvalidParam("body", "larger than %d bytes", maxBody)
		}
		return service.InvalidParam("body", "could not be read: %v", err)
	}
	return decodeBytes(body, v)
}

// decodeBytes is decode over bytes (fuzzed).
func decodeBytes(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return service.InvalidParam("body", "empty; a JSON object is required")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return service.InvalidParam("body", "malformed JSON at byte %d: %v", syn.Offset, syn)
		case errors.As(err, &typ):
			field := typ.Field
			if field == "" {
				field = "body"
			}
			return service.InvalidParam(field, "want %s, got JSON %s", jsonType(typ.Type.Kind().String()), typ.Value)
		default:
			return service.InvalidParam("body", "%v", err)
		}
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int64", "float64":
		return "a number"
	case "slice":
		return "a list"
	case "map", "struct":
		return "an object"
	}
	return kind
}

func checkProject(id string) error {
	if id == "" || len(id) > 64 || !isIDChars(id) {
		return service.InvalidParam("project_id", "%q is not a project id", truncate(id, 70))
	}
	return nil
}

func checkProvider(id string) error {
	if id != service.ProviderID {
		return &service.Error{Code: service.CodeInvalidParam, Status: 400,
			Msg: fmt.Sprintf("provider invalid: provider_id %q; the CSBS provider id is %s", truncate(id, 70), service.ProviderID)}
	}
	return nil
}

func isIDChars(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
