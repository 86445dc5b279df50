package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// KeystoneConfig configures a Keystone validator.
type KeystoneConfig struct {
	// URL is the identity endpoint, with or without the /v3 suffix.
	URL string
	// The service user csbs authenticates as to validate tokens; it needs
	// the right to validate other users' tokens (the "service" or "admin"
	// role in Keystone's default policy).
	User, Password, UserDomain string
	Project, ProjectDomain     string
	// CacheTTL bounds how long a validated token is trusted without asking
	// Keystone again (a token revoked at Keystone stays usable here that
	// long at most). Default 5m.
	CacheTTL time.Duration
	// Client sends the requests; default a client with a 10s timeout.
	Client *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Keystone validates tokens issued by an external OpenStack Keystone with
// GET /v3/auth/tokens, and caches the answers. It is safe for concurrent
// use.
type Keystone struct {
	c    KeystoneConfig
	base string

	mu      sync.Mutex
	svcTok  string
	svcExp  time.Time
	cache   map[[32]byte]cached
	maxSize int
}

type cached struct {
	p     *Principal
	until time.Time
}

// NewKeystone returns a validator against the Keystone of c.
func NewKeystone(c KeystoneConfig) (*Keystone, error) {
	if c.URL == "" {
		return nil, errors.New("auth.keystone_url is required in keystone mode")
	}
	if c.User == "" || c.Password == "" {
		return nil, errors.New("auth.keystone_user and auth.keystone_password (the service credentials csbs validates tokens with) are required in keystone mode")
	}
	if c.UserDomain == "" {
		c.UserDomain = DefaultDomain
	}
	if c.ProjectDomain == "" {
		c.ProjectDomain = c.UserDomain
	}
	if c.CacheTTL <= 0 {
		c.CacheTTL = 5 * time.Minute
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	base := strings.TrimSuffix(strings.TrimSuffix(c.URL, "/"), "/v3")
	return &Keystone{c: c, base: base + "/v3", cache: map[[32]byte]cached{}, maxSize: 10000}, nil
}

// Validate returns the principal of token from the cache, or asks
// Keystone. A token Keystone does not know (404) or refuses is
// ErrInvalidToken; Keystone being unreachable is another error.
func (k *Keystone) Validate(ctx context.Context, token string) (*Principal, error) {
	if token == "" || len(token) > 8192 {
		return nil, ErrInvalidToken
	}
	key := sha256.Sum256([]byte(token)) // the cache holds no tokens
	now := k.c.Now()
	k.mu.Lock()
	e, ok := k.cache[key]
	k.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.p, nil
	}
	p, err := k.validate(ctx, token, true)
	if err != nil {
		return nil, err
	}
	until := now.Add(k.c.CacheTTL)
	if p.ExpiresAt.Before(until) {
		until = p.ExpiresAt
	}
	k.mu.Lock()
	if len(k.cache) >= k.maxSize {
		for kk, v := range k.cache {
			if !now.Before(v.until) {
				delete(k.cache, kk)
			}
		}
		if len(k.cache) >= k.maxSize {
			clear(k.cache)
		}
	}
	k.cache[key] = cached{p: p, until: until}
	k.mu.Unlock()
	return p, nil
}

func (k *Keystone) validate(ctx context.Context, token string, retry bool) (*Principal, error) {
	svc, err := k.serviceToken(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.base+"/auth/tokens", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", svc)
	req.Header.Set("X-Subject-Token", token)
	req.Header.Set("Accept", "application/json")
	res, err := k.c.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("keystone: validate token: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("keystone: validate token: %w", err)
	}
	switch {
	case res.StatusCode == http.StatusOK:
	case res.StatusCode == http.StatusNotFound:
		return nil, ErrInvalidToken
	case res.StatusCode == http.StatusUnauthorized && retry:
		// Our service token expired or was revoked: get a new one, once.
		k.mu.Lock()
		k.svcTok = ""
		k.mu.Unlock()
		return k.validate(ctx, token, false)
	case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("keystone: the service user may not validate tokens (%s); give it the service or admin role", res.Status)
	default:
		return nil, fmt.Errorf("keystone: validate token: %s", res.Status)
	}
	var tb tokenBody
	if err := json.Unmarshal(body, &tb); err != nil {
		return nil, fmt.Errorf("keystone: validate token: unreadable answer: %w", err)
	}
	p, err := tb.Token.principal()
	if err != nil {
		return nil, err
	}
	if !k.c.Now().Before(p.ExpiresAt) {
		return nil, ErrInvalidToken
	}
	return p, nil
}

// serviceToken returns csbs's own token, authenticating again a minute
// before it expires.
func (k *Keystone) serviceToken(ctx context.Context) (string, error) {
	k.mu.Lock()
	tok, exp := k.svcTok, k.svcExp
	k.mu.Unlock()
	if tok != "" && k.c.Now().Add(time.Minute).Before(exp) {
		return tok, nil
	}
	var auth struct {
		Auth struct {
			Identity struct {
				Methods  []string `json:"methods"`
				Password struct {
					User struct {
						Name     string            `json:"name"`
						Domain   map[string]string `json:"domain"`
						Password string            `json:"password"`
					} `json:"user"`
				} `json:"password"`
			} `json:"identity"`
			Scope *struct {
				Project struct {
					Name   string            `json:"name"`
					Domain map[string]string `json:"domain"`
				} `json:"project"`
			} `json:"scope,omitempty"`
		} `json:"auth"`
	}
	id := &auth.Auth.Identity
	id.Methods = []string{"password"}
	id.Password.User.Name = k.c.User
	id.Password.User.Domain = map[string]string{"name": k.c.UserDomain}
	id.Password.User.Password = k.c.Password
	if k.c.Project != "" {
		auth.Auth.Scope = &struct {
			Project struct {
				Name   string            `json:"name"`
				Domain map[string]string `json:"domain"`
			} `json:"project"`
		}{}
		auth.Auth.Scope.Project.Name = k.c.Project
		auth.Auth.Scope.Project.Domain = map[string]string{"name": k.c.ProjectDomain}
	}
	tok, body, refused, err := k.issue(ctx, auth)
	switch {
	case err != nil:
		return "", fmt.Errorf("keystone: authenticate service user: %w", err)
	case refused != 0:
		return "", fmt.Errorf("keystone: authenticate service user %s: %d %s; check auth.keystone_user and auth.keystone_password", k.c.User, refused, http.StatusText(refused))
	}
	var tb tokenBody
	exp = k.c.Now().Add(10 * time.Minute)
	if json.Unmarshal(body, &tb) == nil {
		if t, err := parseKeystoneTime(tb.Token.ExpiresAt); err == nil {
			exp = t
		}
	}
	k.mu.Lock()
	k.svcTok, k.svcExp = tok, exp
	k.mu.Unlock()
	return tok, nil
}

// issue asks Keystone for a token (POST /v3/auth/tokens with auth as its
// body) and returns it with the answer's body. A refusal is no error: its
// HTTP status code comes back in refused (0 when the token was issued).
func (k *Keystone) issue(ctx context.Context, auth any) (tok string, body []byte, refused int, err error) {
	b, err := json.Marshal(auth)
	if err != nil {
		return "", nil, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.base+"/auth/tokens", bytes.NewReader(b))
	if err != nil {
		return "", nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := k.c.Client.Do(req)
	if err != nil {
		return "", nil, 0, err
	}
	defer res.Body.Close()
	if body, err = io.ReadAll(io.LimitReader(res.Body, 4<<20)); err != nil {
		return "", nil, 0, err
	}
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		return "", body, res.StatusCode, nil
	}
	if tok = res.Header.Get("X-Subject-Token"); tok == "" {
		return "", nil, 0, errors.New("no X-Subject-Token in the answer")
	}
	return tok, body, 0, nil
}

// KeystoneTimeFormat is how Keystone writes times.
const KeystoneTimeFormat = "2006-01-02T15:04:05.000000Z"

func parseKeystoneTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t, err = time.Parse("2006-01-02T15:04:05.999999", s)
	}
	return t.UTC(), err
}

// tokenBody is Keystone's token document, the part csbs reads and writes
// (the builtin identity answers with the same shape).
type tokenBody struct {
	Token keystoneToken `json:"token"`
}

type keystoneToken struct {
	Methods   []string      `json:"methods"`
	ExpiresAt string        `json:"expires_at"`
	IssuedAt  string        `json:"issued_at"`
	AuditIDs  []string      `json:"audit_ids"`
	User      keystoneRef   `json:"user"`
	Project   *keystoneRef  `json:"project,omitempty"`
	Roles     []keystoneRef `json:"roles"`
}

// keystoneRef is a user, project, domain or role: an id, a name and, for
// users and projects, a domain.
type keystoneRef struct {
	ID     string       `json:"id"`
	Name   string       `json:"name"`
	Domain *keystoneRef `json:"domain,omitempty"`
}

func (t keystoneToken) principal() (*Principal, error) {
	exp, err := parseKeystoneTime(t.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("keystone: token without a readable expires_at: %w", err)
	}
	p := &Principal{UserID: t.User.ID, UserName: t.User.Name, Methods: t.Methods, ExpiresAt: exp}
	if iss, err := parseKeystoneTime(t.IssuedAt); err == nil {
		p.IssuedAt = iss
	}
	if len(t.AuditIDs) > 0 {
		p.TokenID = t.AuditIDs[0]
	}
	if d := t.User.Domain; d != nil {
		p.UserDomainID, p.UserDomainName = d.ID, d.Name
	}
	if pr := t.Project; pr != nil {
		p.ProjectID, p.ProjectName = pr.ID, pr.Name
		if d := pr.Domain; d != nil {
			p.ProjectDomainID, p.ProjectDomainName = d.ID, d.Name
		}
	}
	for _, r := range t.Roles {
		// Keystone role names are case-insensitive; csbs compares lower case.
		p.Roles = append(p.Roles, strings.ToLower(r.Name))
	}
	return p, nil
}
