// Package client is a Go client of the csbs API (the CSBS v1 API and its
// extensions). The csbs CLI and black-box tests use it.
//
// A Client talks to one project's endpoint, the URL that ends in
// /v1/{project_id}. Get one with New (endpoint and token known) or with
// Authenticate (Keystone v3 password authentication, then the
// data-protect endpoint of the token's catalog).
//
// Every refusal of the service is an *APIError carrying the CSBS error
// code and message; other errors are transport failures. Nothing is
// retried: a request either reached the service and was answered, or the
// caller decides whether to try again.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ProviderID is the CSBS backup provider, the only one there is.
const ProviderID = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"

// Client calls the API of one project. Its fields may be set before the
// first call and must not change after.
type Client struct {
	// Endpoint is the project's base URL, ending in /v1/{project_id}.
	Endpoint string
	// Token is sent as X-Auth-Token when not empty (a secret: never
	// printed by this package).
	Token string
	// HTTP is the HTTP client; default one with a 60 s timeout.
	HTTP *http.Client
	// UserAgent is sent as User-Agent; default "csbs-client".
	UserAgent string
}

// New returns a client of the project endpoint (…/v1/{project_id}).
func New(endpoint, token string) *Client {
	return &Client{Endpoint: strings.TrimSuffix(endpoint, "/"), Token: token}
}

// APIError is a refusal of the service: the HTTP status and the CSBS
// error code and message of the body (or Keystone's, for /v3). Code is
// empty when the body had none (a proxy's answer, say).
type APIError struct {
	Status  int
	Code    string
	Message string
	// RequestID is the service's X-Request-Id, to find its log lines.
	RequestID string
}

func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = fmt.Sprintf("HTTP %d", e.Status)
	}
	return code + ": " + e.Message
}

// IsNotFound reports whether err is a 404 of the service.
func IsNotFound(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// Do sends method path (relative to Endpoint, e.g. "/checkpoint_items")
// with query and the JSON of in (none when nil), and decodes a 2xx answer's
// body into out (skipped when nil or the body is empty). Any other status
// is an *APIError.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	u := c.Endpoint + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return c.do(ctx, method, u, in, out, nil)
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 60 * time.Second}
}

// do sends a request to the absolute URL u; hdr, when not nil, receives
// the response headers.
func (c *Client) do(ctx context.Context, method, u string, in, out any, hdr *http.Header) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("X-Auth-Token", c.Token)
	}
	ua := c.UserAgent
	if ua == "" {
		ua = "csbs-client"
	}
	req.Header.Set("User-Agent", ua)
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, redactURL(u), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, redactURL(u), err)
	}
	if hdr != nil {
		*hdr = resp.Header
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp, data)
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], data...)
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, redactURL(u), err)
	}
	return nil
}

// apiError reads the error body of the CSBS API ({"error_code",
// "error_msg"}) or of Keystone ({"error": {"message"}}).
func apiError(resp *http.Response, data []byte) *APIError {
	e := &APIError{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	var body struct {
		Code  string `json:"error_code"`
		Msg   string `json:"error_msg"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &body) == nil {
		e.Code, e.Message = body.Code, body.Msg
		if e.Message == "" && body.Error != nil {
			e.Message = body.Error.Message
		}
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(data))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// redactURL drops the query (it may hold markers, never secrets, but is
// long) for error messages.
func redactURL(u string) string {
	base, _, _ := strings.Cut(u, "?")
	return base
}
