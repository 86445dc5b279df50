package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// User is a user of the builtin identity, as the configuration lists it.
type User struct {
	// ID is the user id; when empty it is derived from domain and name.
	ID     string
	Name   string
	Domain string // domain name; default "Default"
	// PasswordHash is a bcrypt hash (csbs hash-password); Password a clear
	// text password for development. Exactly one is set.
	PasswordHash string
	Password     string
	Projects     []Project
}

// Project is a project a user may scope a token to, with the user's roles
// in it.
type Project struct {
	ID    string
	Name  string
	Roles []string
}

// Revocations records revoked tokens. The store implements it.
type Revocations interface {
	// RevokeToken records that the token with id is revoked until expires;
	// revoking twice is not an error.
	RevokeToken(ctx context.Context, id string, expires time.Time) error
	// TokenRevoked reports whether the token with id was revoked.
	TokenRevoked(ctx context.Context, id string) (bool, error)
}

// BuiltinConfig configures a Builtin.
type BuiltinConfig struct {
	Users []User
	// Key signs the tokens (LoadOrCreateKey); at least 32 bytes.
	Key []byte
	// TTL is how long a token is valid. Default 24h.
	TTL         time.Duration
	Revocations Revocations
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Sleep waits d unless ctx ends first (throttling); default a timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Builtin is the builtin identity: it authenticates the configured users
// by password, issues signed tokens scoped to one of their projects,
// validates and revokes them. It is safe for concurrent use.
type Builtin struct {
	users    []*user
	sig      signer
	ttl      time.Duration
	revoked  Revocations
	now      func() time.Time
	sleep    func(ctx context.Context, d time.Duration) error
	throttle *throttle
	// dummy is compared against when the user is unknown, so that an
	// unknown user costs as much time as a wrong password.
	dummy []byte
}

type user struct {
	User
	domainID string
	hash     []byte
}

// DefaultDomain is the domain of users that name none, as in Keystone.
const DefaultDomain = "Default"

// DomainID returns the id of a domain name: "default" for Keystone's
// Default domain, otherwise a stable id derived from the name.
func DomainID(name string) string {
	if strings.EqualFold(name, DefaultDomain) {
		return "default"
	}
	return derivedID("domain", name)
}

// UserID returns the id a user without a configured id gets.
func UserID(domain, name string) string { return derivedID("user", domain+"\x00"+name) }

func derivedID(kind, s string) string {
	h := sha256.Sum256([]byte(kind + ":" + s))
	return hex.EncodeToString(h[:16])
}

// NewBuiltin checks the users and returns the builtin identity. Clear text
// passwords are hashed here, so that every check costs one bcrypt.
func NewBuiltin(c BuiltinConfig) (*Builtin, error) {
	if len(c.Key) < 32 {
		return nil, errors.New("auth: the token signing key must have at least 32 bytes")
	}
	if c.Revocations == nil {
		return nil, errors.New("auth: builtin identity needs a revocation store")
	}
	if c.TTL <= 0 {
		c.TTL = 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = sleepCtx
	}
	b := &Builtin{sig: signer{key: c.Key}, ttl: c.TTL, revoked: c.Revocations, now: c.Now, sleep: c.Sleep, throttle: newThrottle()}
	dummy, err := bcrypt.GenerateFromPassword([]byte("csbs: no such user"), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	b.dummy = dummy
	seen := map[string]bool{}
	for i, cu := range c.Users {
		u := &user{User: cu}
		if u.Domain == "" {
			u.Domain = DefaultDomain
		}
		if u.Name == "" {
			return nil, fmt.Errorf("auth.users[%d]: name is empty", i)
		}
		if u.ID == "" {
			u.ID = UserID(u.Domain, u.Name)
		}
		u.domainID = DomainID(u.Domain)
		key := strings.ToLower(u.Domain) + "/" + u.Name
		if seen[key] || seen["id:"+u.ID] {
			return nil, fmt.Errorf("auth.users[%d]: user %s in domain %s is listed twice", i, u.Name, u.Domain)
		}
		seen[key], seen["id:"+u.ID] = true, true
		switch {
		case u.PasswordHash != "" && u.Password != "":
			return nil, fmt.Errorf("auth.users[%d] (%s): set password_hash or password, not both", i, u.Name)
		case u.PasswordHash != "":
			if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
				return nil, fmt.Errorf("auth.users[%d] (%s): password_hash is not a bcrypt hash; make one with csbs hash-password", i, u.Name)
			}
			u.hash = []byte(u.PasswordHash)
		case u.Password != "":
			h, err := bcrypt.GenerateFromPassword([]byte(u.Password), bcrypt.DefaultCost)
			if err != nil {
				return nil, fmt.Errorf("auth.users[%d] (%s): %w", i, u.Name, err)
			}
			u.hash = h
		default:
			return nil, fmt.Errorf("auth.users[%d] (%s): set password_hash (csbs hash-password) or password", i, u.Name)
		}
		if len(u.Projects) == 0 {
			return nil, fmt.Errorf("auth.users[%d] (%s): no projects; a token must be scoped to one", i, u.Name)
		}
		for j, p := range u.Projects {
			if p.ID == "" || !isIDChars(p.ID) || len(p.ID) > 64 {
				return nil, fmt.Errorf("auth.users[%d].projects[%d]: id %q: want up to 64 letters, digits, - or _", i, j, p.ID)
			}
			if p.Name == "" {
				u.Projects[j].Name = p.ID
			}
		}
		b.users = append(b.users, u)
	}
	return b, nil
}

func isIDChars(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Credentials is a password authentication request with its scope, as a
// Keystone v3 client sends it. The user is named by id, or by name and the
// domain's name or id; the project likewise (no project: the user's first).
// A domain scope (DomainScope, with the domain's name or id) asks for a
// token of the user's own domain instead of a project, as the cloud's
// Terraform provider does when it configures.
type Credentials struct {
	UserID, UserName, UserDomainID, UserDomainName string
	Password                                       string
	ProjectID, ProjectName                         string
	ProjectDomainID, ProjectDomainName             string
	DomainScope                                    bool
	ScopeDomainID, ScopeDomainName                 string
}

// Issue authenticates c and returns a new token and its principal. Unknown
// users and wrong passwords both get ErrUnauthorized, after the same work;
// repeated failures for one user name are answered more and more slowly.
// A project the user is not a member of is ErrUnauthorized too.
func (b *Builtin) Issue(ctx context.Context, c Credentials) (string, *Principal, error) {
	if c.Password == "" {
		return "", nil, &RequestError{Msg: "auth.identity.password.user.password is required"}
	}
	var key string
	switch {
	case c.UserID != "":
		key = "id:" + c.UserID
	case c.UserName != "" && (c.UserDomainName != "" || c.UserDomainID != ""):
		key = strings.ToLower(c.UserDomainName) + "/" + strings.ToLower(c.UserDomainID) + "/" + c.UserName
	case c.UserName != "":
		return "", nil, &RequestError{Msg: "auth.identity.password.user.domain is required with user.name: give its name or id"}
	default:
		return "", nil, &RequestError{Msg: "auth.identity.password.user: give id, or name and domain"}
	}
	wait, ok := b.throttle.reserve(key, b.now())
	if !ok {
		return "", nil, ErrUnauthorized
	}
	if wait > 0 {
		if err := b.sleep(ctx, wait); err != nil {
			return "", nil, err
		}
	}
	u := b.findUser(c)
	hash := b.dummy
	if u != nil {
		hash = u.hash
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(c.Password)) != nil || u == nil {
		b.throttle.fail(key, b.now())
		return "", nil, ErrUnauthorized
	}
	b.throttle.succeed(key)
	now := b.now().UTC().Truncate(time.Microsecond)
	cl := claims{
		ID: newAuditID(), UserID: u.ID, Methods: []string{"password"},
		IssuedAt: micros(now), ExpiresAt: micros(now.Add(b.ttl)),
	}
	var p Project
	if c.DomainScope {
		if err := u.scopeDomain(c); err != nil {
			return "", nil, err
		}
		// A domain token carries no project and no roles: it is for the
		// identity service only, and /v1 refuses it.
		cl.DomainID = u.domainID
	} else {
		var err error
		if p, err = u.project(c); err != nil {
			return "", nil, err
		}
		cl.ProjectID, cl.Roles = p.ID, slices.Clone(p.Roles)
	}
	tok, err := b.sig.sign(cl)
	if err != nil {
		return "", nil, err
	}
	return tok, u.principal(p, cl), nil
}

func (b *Builtin) findUser(c Credentials) *user {
	for _, u := range b.users {
		if c.UserID != "" {
			if u.ID == c.UserID {
				return u
			}
			continue
		}
		if u.Name != c.UserName {
			continue
		}
		if (c.UserDomainName == "" || strings.EqualFold(c.UserDomainName, u.Domain)) &&
			(c.UserDomainID == "" || c.UserDomainID == u.domainID) {
			return u
		}
	}
	return nil
}

// scopeDomain checks the domain scope of c: users of the builtin identity
// belong to one domain, and only that one can be asked for.
func (u *user) scopeDomain(c Credentials) error {
	switch {
	case c.ScopeDomainID == "" && c.ScopeDomainName == "":
		return &RequestError{Msg: "auth.scope.domain: give its id or name"}
	case c.ScopeDomainID != "" && c.ScopeDomainID != u.domainID,
		c.ScopeDomainName != "" && !strings.EqualFold(c.ScopeDomainName, u.Domain):
		return ErrUnauthorized
	}
	return nil
}

// project finds the project of the scope of c among u's.
func (u *user) project(c Credentials) (Project, error) {
	switch {
	case c.ProjectID == "" && c.ProjectName == "":
		return u.Projects[0], nil
	case c.ProjectName != "" && c.ProjectDomainName == "" && c.ProjectDomainID == "":
		return Project{}, &RequestError{Msg: "auth.scope.project.domain is required with project.name: give its name or id"}
	}
	for _, p := range u.Projects {
		if c.ProjectID != "" && p.ID == c.ProjectID {
			return p, nil
		}
		// Projects live in their user's domain.
		if c.ProjectID == "" && p.Name == c.ProjectName &&
			(c.ProjectDomainName == "" || strings.EqualFold(c.ProjectDomainName, u.Domain)) &&
			(c.ProjectDomainID == "" || c.ProjectDomainID == u.domainID) {
			return p, nil
		}
	}
	return Project{}, ErrUnauthorized
}

func (u *user) principal(p Project, c claims) *Principal {
	pr := &Principal{
		TokenID: c.ID, UserID: u.ID, UserName: u.Name, UserDomainID: u.domainID, UserDomainName: u.Domain,
		Roles: c.Roles, Methods: c.Methods, IssuedAt: fromMicros(c.IssuedAt), ExpiresAt: fromMicros(c.ExpiresAt),
	}
	if c.DomainID != "" {
		pr.ScopeDomainID, pr.ScopeDomainName = u.domainID, u.Domain
	} else {
		pr.ProjectID, pr.ProjectName, pr.ProjectDomainID, pr.ProjectDomainName = p.ID, p.Name, u.domainID, u.Domain
	}
	return pr
}

// Validate checks a token's signature, expiry and revocation, and that its
// user still exists with its project: removing a user or a project from
// the configuration invalidates their tokens.
func (b *Builtin) Validate(ctx context.Context, token string) (*Principal, error) {
	c, err := b.sig.verify(token)
	if err != nil {
		return nil, err
	}
	if !b.now().Before(fromMicros(c.ExpiresAt)) {
		return nil, ErrInvalidToken
	}
	var u *user
	for _, cand := range b.users {
		if cand.ID == c.UserID {
			u = cand
		}
	}
	if u == nil {
		return nil, ErrInvalidToken
	}
	var p Project
	switch {
	case c.DomainID != "":
		if c.ProjectID != "" || c.DomainID != u.domainID {
			return nil, ErrInvalidToken
		}
	default:
		i := slices.IndexFunc(u.Projects, func(p Project) bool { return p.ID == c.ProjectID })
		if i < 0 {
			return nil, ErrInvalidToken
		}
		p = u.Projects[i]
	}
	revoked, err := b.revoked.TokenRevoked(ctx, c.ID)
	if err != nil {
		return nil, fmt.Errorf("check token revocation: %w", err)
	}
	if revoked {
		return nil, ErrInvalidToken
	}
	return u.principal(p, c), nil
}

// Revoke makes a valid token invalid from now on, for every process that
// shares the revocation store. An invalid token is ErrInvalidToken.
func (b *Builtin) Revoke(ctx context.Context, token string) error {
	p, err := b.Validate(ctx, token)
	if err != nil {
		return err
	}
	return b.revoked.RevokeToken(ctx, p.TokenID, p.ExpiresAt)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HashPassword returns the bcrypt hash of password for the configuration's
// password_hash.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("the password is empty")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	return string(h), err
}

// RoleID returns the id of a role name in builtin tokens.
func RoleID(name string) string { return derivedID("role", strings.ToLower(name)) }
