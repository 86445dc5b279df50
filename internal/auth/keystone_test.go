package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeystoneCache: against a Keystone stand-in (an httptest server, not
// a real Keystone), a validated token is cached until the earlier of its
// expiry and CacheTTL; unknown tokens are ErrInvalidToken; a Keystone
// failure is another error.
func TestKeystoneCache(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 5, 6, 7, 0, 0, 0, time.UTC)}
	var validations atomic.Int32
	var down atomic.Bool
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case down.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.Method == "POST":
			w.Header().Set("X-Subject-Token", "svc")
			w.WriteHeader(201)
			fmt.Fprintf(w, `{"token": {"expires_at": %q}}`, clock.now().Add(time.Hour).Format(KeystoneTimeFormat))
		case r.Header.Get("X-Auth-Token") != "svc":
			w.WriteHeader(401)
		default:
			validations.Add(1)
			exp := map[string]time.Duration{"long": 2 * time.Hour, "short": 2 * time.Minute}[r.Header.Get("X-Subject-Token")]
			if exp == 0 {
				w.WriteHeader(404)
				return
			}
			fmt.Fprintf(w, `{"token": {"expires_at": %q, "user": {"id": "u1", "name": "alice"}, "project": {"id": "p1", "name": "P"}, "roles": [{"name": "ADMIN"}]}}`,
				clock.now().Add(exp).Format(KeystoneTimeFormat))
		}
	}))
	defer ks.Close()
	k, err := NewKeystone(KeystoneConfig{URL: ks.URL + "/v3/", User: "svc", Password: "pw", CacheTTL: 5 * time.Minute, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	validate := func(tok string, wantCalls int32) *Principal {
		t.Helper()
		p, err := k.Validate(ctx, tok)
		if err != nil {
			t.Fatalf("Validate(%s): %v", tok, err)
		}
		if got := validations.Load(); got != wantCalls {
			t.Fatalf("Validate(%s): %d calls to Keystone, want %d", tok, got, wantCalls)
		}
		return p
	}
	p := validate("long", 1)
	if p.ProjectID != "p1" || p.UserName != "alice" || !p.Admin() {
		t.Fatalf("principal %+v", p)
	}
	validate("long", 1) // cached
	clock.add(4 * time.Minute)
	validate("long", 1)        // still within CacheTTL
	clock.add(2 * time.Minute) // past CacheTTL: asked again
	validate("long", 2)
	validate("short", 3)
	clock.add(90 * time.Second)
	validate("short", 3)   // cached, not yet expired
	clock.add(time.Minute) // expired: the cache ends with the token
	validations.Store(0)
	if _, err := k.Validate(ctx, "short"); err != nil || validations.Load() != 1 {
		t.Fatalf("after expiry: %v, %d calls", err, validations.Load())
	}
	if _, err := k.Validate(ctx, "unknown"); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("unknown token: %v", err)
	}
	down.Store(true)
	clock.add(time.Hour)
	if _, err := k.Validate(ctx, "long"); err == nil || errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Keystone down: %v, want an error other than ErrInvalidToken", err)
	}
}
