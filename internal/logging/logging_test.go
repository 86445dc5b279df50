package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestContextAttrs(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, "json", "debug")
	ctx := With(context.Background(), "request_id", "req-1")
	ctx = With(ctx, "job_id", "job-2")
	log.With("kind", "protect").InfoContext(ctx, "hello", "n", 3)
	log.Info("no context")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"request_id": "req-1", "job_id": "job-2", "kind": "protect", "n": 3.0, "msg": "hello"} {
		if first[k] != want {
			t.Errorf("line 1: %s = %v, want %v (line %s)", k, first[k], want, lines[0])
		}
	}
	if _, ok := second["request_id"]; ok {
		t.Errorf("a line logged without the context carries its request_id: %s", lines[1])
	}
}

func TestRedact(t *testing.T) {
	tests := []struct {
		key    string
		secret bool
	}{
		{"password", true},
		{"OS_PASSWORD", true},
		{"repository_password", true},
		{"token", true},
		{"X-Auth-Token", true},
		{"subject_token", true},
		{"client_secret", true},
		{"key", true},
		{"master_key", true},
		{"password_file", false},
		{"key_path", false},
		{"token_audit_id", false},
		{"request_id", false},
		{"keystone_url", false},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		New(&buf, "text", "info").Info("m", tc.key, "s3cr3t-value")
		leaked := strings.Contains(buf.String(), "s3cr3t-value")
		if leaked == tc.secret {
			t.Errorf("key %q: logged %q; want secret=%v", tc.key, buf.String(), tc.secret)
		}
		if Secret(tc.key) != tc.secret {
			t.Errorf("Secret(%q) = %v, want %v", tc.key, !tc.secret, tc.secret)
		}
	}
}

func TestLevel(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, "text", "warn")
	log.Info("quiet")
	log.Warn("loud")
	if strings.Contains(buf.String(), "quiet") || !strings.Contains(buf.String(), "loud") {
		t.Errorf("level warn wrote %q", buf.String())
	}
}
