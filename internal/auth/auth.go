// Package auth decides who a request comes from. It knows three modes:
//
//   - none: no identity at all; the API takes the project from the URL
//     (local development only, handled by the caller: no Validator).
//   - builtin (Builtin): csbs is its own Keystone v3 subset. Users come from
//     the configuration; tokens are HMAC-SHA256-signed, carry their scope,
//     roles and expiry, and can be revoked.
//   - keystone (Keystone): tokens come from an external OpenStack Keystone
//     and are validated there with GET /v3/auth/tokens, then cached.
//
// Tokens are secrets: nothing in this package logs them or puts them into
// an error message, and neither may its callers.
package auth

import (
	"context"
	"errors"
	"slices"
	"time"
)

var (
	// ErrInvalidToken means the token is not valid: malformed, forged,
	// expired, revoked, or unknown to the identity service. The client must
	// authenticate again (HTTP 401); retrying with the same token is useless.
	ErrInvalidToken = errors.New("the token is not valid: it is malformed, expired or revoked; authenticate again at /v3/auth/tokens")
	// ErrUnauthorized means the credentials of an authentication request
	// were refused. Unknown users and wrong passwords get this same error.
	ErrUnauthorized = errors.New("the request you have made requires authentication: user or password is wrong")
)

// RequestError is an authentication request that cannot be understood: a
// missing field, an unsupported method or scope (HTTP 400). Msg names the
// field and never contains a secret.
type RequestError struct{ Msg string }

func (e *RequestError) Error() string { return e.Msg }

// AdminRole is the role that makes a principal an administrator: it may
// act in every project and list all tenants.
const AdminRole = "admin"

// Principal is who a request comes from: the user and the project a token
// is scoped to.
type Principal struct {
	// TokenID identifies the token (its audit id) without being it: it is
	// safe to log and is what revocation records.
	TokenID           string
	UserID            string
	UserName          string
	UserDomainID      string
	UserDomainName    string
	ProjectID         string // "" for a token without a project scope
	ProjectName       string
	ProjectDomainID   string
	ProjectDomainName string
	// ScopeDomainID and ScopeDomainName are set, and the project fields
	// empty, for a domain-scoped token: it identifies the user to the
	// identity service and grants nothing under /v1/{project_id}.
	ScopeDomainID   string
	ScopeDomainName string
	Roles           []string
	Methods         []string
	IssuedAt        time.Time
	ExpiresAt       time.Time
}

// Admin reports whether the principal holds the admin role.
func (p *Principal) Admin() bool { return slices.Contains(p.Roles, AdminRole) }

// Validator checks tokens.
type Validator interface {
	// Validate returns the principal of token. ErrInvalidToken means the
	// token is not (or no longer) valid; any other error means validity
	// could not be decided (the identity service or the database is
	// unreachable) and the request may be retried later.
	Validate(ctx context.Context, token string) (*Principal, error)
}

type ctxKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal of a request, or nil when the request
// carries none (auth.mode none).
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}
