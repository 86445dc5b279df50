package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/store"
)

const (
	projA = "b942cc8342734d15bcb246babb1953cf"
	projB = "0123456789abcdef0123456789abcdef"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	b      *Builtin
	clock  *fakeClock
	slept  []time.Duration
	dbPath string
}

func users() []User {
	return []User{
		{Name: "alice", Password: "alice-pw", Projects: []Project{
			{ID: projA, Name: "eu-de_alice", Roles: []string{"member"}},
			{ID: projB, Name: "eu-de_shared", Roles: []string{"member"}},
		}},
		{Name: "root", Domain: "ops", Password: "root-pw", Projects: []Project{{ID: projB, Name: "eu-de_ops", Roles: []string{"admin"}}}},
	}
}

func newEnv(t *testing.T, us []User) *env {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(context.Background(), "", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := LoadOrCreateKey(filepath.Join(dir, "token.key"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{clock: &fakeClock{t: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)}, dbPath: dir}
	e.b, err = NewBuiltin(BuiltinConfig{Users: us, Key: key, TTL: time.Hour, Revocations: db, Now: e.clock.now,
		Sleep: func(_ context.Context, d time.Duration) error { e.slept = append(e.slept, d); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestIssueAndValidate(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, users())
	tests := []struct {
		name    string
		c       Credentials
		project string
		err     error
	}{
		{"by name and domain name, project by id", Credentials{UserName: "alice", UserDomainName: "Default", Password: "alice-pw", ProjectID: projB}, projB, nil},
		{"by name and domain id, project by name", Credentials{UserName: "alice", UserDomainID: "default", Password: "alice-pw", ProjectName: "eu-de_alice", ProjectDomainName: "Default"}, projA, nil},
		{"by user id, no scope: first project", Credentials{UserID: UserID("Default", "alice"), Password: "alice-pw"}, projA, nil},
		{"domain name case-insensitive", Credentials{UserName: "root", UserDomainName: "OPS", Password: "root-pw", ProjectName: "eu-de_ops", ProjectDomainID: DomainID("ops")}, projB, nil},
		{"wrong password", Credentials{UserName: "alice", UserDomainName: "Default", Password: "nope"}, "", ErrUnauthorized},
		{"unknown user", Credentials{UserName: "mallory", UserDomainName: "Default", Password: "alice-pw"}, "", ErrUnauthorized},
		{"wrong domain", Credentials{UserName: "alice", UserDomainName: "ops", Password: "alice-pw"}, "", ErrUnauthorized},
		{"project not a member of", Credentials{UserName: "root", UserDomainName: "ops", Password: "root-pw", ProjectID: projA}, "", ErrUnauthorized},
		{"project name of another domain", Credentials{UserName: "alice", UserDomainName: "Default", Password: "alice-pw", ProjectName: "eu-de_alice", ProjectDomainName: "ops"}, "", ErrUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, p, err := e.b.Issue(ctx, tc.c)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Issue: %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if p.ProjectID != tc.project || !p.ExpiresAt.Equal(e.clock.now().Add(time.Hour)) {
				t.Fatalf("principal %+v", p)
			}
			if strings.Contains(tok, tc.c.Password) {
				t.Fatal("the token contains the password")
			}
			v, err := e.b.Validate(ctx, tok)
			if err != nil || v.ProjectID != p.ProjectID || v.UserID != p.UserID || v.TokenID != p.TokenID || v.Admin() != p.Admin() {
				t.Fatalf("Validate = %+v, %v; issued %+v", v, err, p)
			}
		})
	}
}

func TestRequestErrors(t *testing.T) {
	e := newEnv(t, users())
	for _, c := range []Credentials{
		{UserName: "alice", Password: "alice-pw"},      // no domain
		{Password: "alice-pw"},                         // no user
		{UserName: "alice", UserDomainName: "Default"}, // no password
		{UserName: "alice", UserDomainName: "Default", Password: "alice-pw", ProjectName: "eu-de_alice"}, // project name without domain
	} {
		var re *RequestError
		if _, _, err := e.b.Issue(context.Background(), c); !errors.As(err, &re) {
			t.Errorf("Issue(%+v): %v, want a RequestError", c, err)
		}
	}
}

func TestInvalidTokens(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, users())
	tok, _, err := e.b.Issue(ctx, Credentials{UserName: "alice", UserDomainName: "Default", Password: "alice-pw"})
	if err != nil {
		t.Fatal(err)
	}
	other := newEnv(t, users()) // another key
	forged, _, _ := other.b.Issue(ctx, Credentials{UserName: "alice", UserDomainName: "Default", Password: "alice-pw"})
	body, sig, _ := strings.Cut(strings.TrimPrefix(tok, tokenPrefix), ".")
	tests := map[string]string{
		"empty":              "",
		"garbage":            "not-a-token",
		"other key":          forged,
		"payload of another": tokenPrefix + strings.Split(strings.TrimPrefix(forged, tokenPrefix), ".")[0] + "." + sig,
		"flipped signature":  tok[:len(tok)-2] + string("AB"[(strings.IndexByte("AB", tok[len(tok)-2])+1)%2]) + tok[len(tok)-1:],
		"no signature":       tokenPrefix + body,
		"wrong prefix":       "csbs2." + body + "." + sig,
	}
	for name, bad := range tests {
		if _, err := e.b.Validate(ctx, bad); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: Validate = %v, want ErrInvalidToken", name, err)
		}
	}

	// Expired: valid until the last microsecond before expires_at.
	e.clock.add(time.Hour - time.Microsecond)
	if _, err := e.b.Validate(ctx, tok); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	e.clock.add(time.Microsecond)
	if _, err := e.b.Validate(ctx, tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("at expiry: %v, want ErrInvalidToken", err)
	}
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, users())
	c := Credentials{UserName: "alice", UserDomainName: "Default", Password: "alice-pw"}
	t1, _, _ := e.b.Issue(ctx, c)
	t2, _, _ := e.b.Issue(ctx, c)
	if err := e.b.Revoke(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.Validate(ctx, t1); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("revoked token: %v", err)
	}
	if _, err := e.b.Validate(ctx, t2); err != nil {
		t.Fatalf("another token of the same user: %v", err)
	}
	if err := e.b.Revoke(ctx, t1); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("revoking twice: %v", err)
	}
}

// TestUserRemoved: removing a user (or their project) from the
// configuration invalidates their tokens at the next start.
func TestUserRemoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key, _ := LoadOrCreateKey(filepath.Join(dir, "token.key"))
	b1, err := NewBuiltin(BuiltinConfig{Users: users(), Key: key, Revocations: db})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := b1.Issue(ctx, Credentials{UserName: "alice", UserDomainName: "Default", Password: "alice-pw", ProjectID: projB})
	if err != nil {
		t.Fatal(err)
	}
	us := users()
	us[0].Projects = us[0].Projects[:1] // alice leaves projB
	b2, err := NewBuiltin(BuiltinConfig{Users: us, Key: key, Revocations: db})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Validate(ctx, tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token of a project the user left: %v", err)
	}
	b3, _ := NewBuiltin(BuiltinConfig{Users: users(), Key: key, Revocations: db})
	if _, err := b3.Validate(ctx, tok); err != nil {
		t.Fatalf("same config, new process: %v", err)
	}
}

func TestThrottle(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, users())
	bad := Credentials{UserName: "alice", UserDomainName: "Default", Password: "wrong"}
	for i := 0; i < 4; i++ {
		if _, _, err := e.b.Issue(ctx, bad); !errors.Is(err, ErrUnauthorized) {
			t.Fatal(err)
		}
	}
	// The first attempt is free; then each waits out the delay since the
	// previous one, doubling: 200ms, 400ms, 800ms (no time passes here).
	want := []time.Duration{200 * time.Millisecond, 600 * time.Millisecond, 1400 * time.Millisecond}
	if len(e.slept) != len(want) {
		t.Fatalf("slept %v, want %v", e.slept, want)
	}
	for i := range want {
		if e.slept[i] != want[i] {
			t.Fatalf("slept %v, want %v", e.slept, want)
		}
	}
	// Another user is not slowed down; an unknown one is, like a known one.
	e.slept = nil
	if _, _, err := e.b.Issue(ctx, Credentials{UserName: "root", UserDomainName: "ops", Password: "root-pw"}); err != nil || len(e.slept) != 0 {
		t.Fatalf("other user: %v, slept %v", err, e.slept)
	}
	// The right password after the wait succeeds and resets the count.
	e.clock.add(time.Minute)
	if _, _, err := e.b.Issue(ctx, Credentials{UserName: "alice", UserDomainName: "Default", Password: "alice-pw"}); err != nil {
		t.Fatal(err)
	}
	e.slept = nil
	e.b.Issue(ctx, bad)
	if len(e.slept) != 0 {
		t.Fatalf("after a success the first failure waited %v", e.slept)
	}
	// Many failures in a row are refused without checking the password.
	for i := 0; i < 20; i++ {
		e.b.Issue(ctx, bad)
	}
	e.slept = nil
	if _, _, err := e.b.Issue(ctx, Credentials{UserName: "alice", UserDomainName: "Default", Password: "alice-pw"}); !errors.Is(err, ErrUnauthorized) || len(e.slept) != 0 {
		t.Fatalf("locked out: %v, slept %v", err, e.slept)
	}
	e.clock.add(forgetAfter + time.Second)
	if _, _, err := e.b.Issue(ctx, Credentials{UserName: "alice", UserDomainName: "Default", Password: "alice-pw"}); err != nil {
		t.Fatalf("after a quiet period: %v", err)
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "token.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || len(k1) != 32 {
		t.Fatalf("key file %v, %v; key of %d bytes", fi.Mode(), err, len(k1))
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("second load: %v, same key %v", err, string(k1) == string(k2))
	}
	os.WriteFile(path, []byte("short\n"), 0o600)
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("a damaged key file was accepted")
	}
}

func TestNewBuiltinRefuses(t *testing.T) {
	key := make([]byte, 32)
	db := noRevocations{}
	for name, u := range map[string]User{
		"no password":  {Name: "a", Projects: []Project{{ID: "p"}}},
		"both":         {Name: "a", Password: "x", PasswordHash: "$2a$10$x", Projects: []Project{{ID: "p"}}},
		"bad hash":     {Name: "a", PasswordHash: "plain", Projects: []Project{{ID: "p"}}},
		"no projects":  {Name: "a", Password: "x"},
		"bad project":  {Name: "a", Password: "x", Projects: []Project{{ID: "p/../q"}}},
		"no user name": {Password: "x", Projects: []Project{{ID: "p"}}},
	} {
		if _, err := NewBuiltin(BuiltinConfig{Users: []User{u}, Key: key, Revocations: db}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if u.Password != "" && strings.Contains(err.Error(), u.Password) {
			t.Errorf("%s: error shows the password: %v", name, err)
		}
	}
}

type noRevocations struct{}

func (noRevocations) RevokeToken(context.Context, string, time.Time) error { return nil }
func (noRevocations) TokenRevoked(context.Context, string) (bool, error)   { return false, nil }
