package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// SignIn signs a user in at Keystone with a password (POST
// /v3/auth/tokens), scoped to c.ProjectID, and returns the token Keystone
// issued and its principal. It serves the web console's sign-in in
// keystone mode: the token is then validated like any other. (It is not
// named Issue: the API answers /v3/auth/tokens only for an identity that
// issues its own tokens; API clients of a Keystone sign in there.) A wrong
// user, password or project is ErrUnauthorized; Keystone being unreachable
// is another error.
func (k *Keystone) SignIn(ctx context.Context, c Credentials) (string, *Principal, error) {
	if c.UserName == "" || c.Password == "" {
		return "", nil, &RequestError{Msg: "a user name and a password are required"}
	}
	if c.ProjectID == "" {
		return "", nil, &RequestError{Msg: "the id of the project to work in is required"}
	}
	domain := map[string]string{"name": c.UserDomainName}
	if c.UserDomainID != "" {
		domain = map[string]string{"id": c.UserDomainID}
	}
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{
			"user": map[string]any{"name": c.UserName, "domain": domain, "password": c.Password}}},
		"scope": map[string]any{"project": map[string]string{"id": c.ProjectID}},
	}}
	tok, rb, refused, err := k.issue(ctx, body)
	switch {
	case err != nil:
		return "", nil, fmt.Errorf("keystone: sign in: %w", err)
	case refused == http.StatusUnauthorized || refused == http.StatusForbidden || refused == http.StatusNotFound:
		return "", nil, ErrUnauthorized
	case refused != 0:
		return "", nil, fmt.Errorf("keystone: sign in: %d %s", refused, http.StatusText(refused))
	}
	var tb tokenBody
	if json.Unmarshal(rb, &tb) != nil {
		return "", nil, errors.New("keystone: sign in: the answer has no token")
	}
	p, err := tb.Token.principal()
	if err != nil {
		return "", nil, err
	}
	return tok, p, nil
}

// Revoke revokes token at Keystone (DELETE /v3/auth/tokens, as its holder)
// and forgets it here, so that it stops working at once rather than when
// the cache would have asked Keystone again. A token Keystone no longer
// knows is ErrInvalidToken.
func (k *Keystone) Revoke(ctx context.Context, token string) error {
	k.mu.Lock()
	delete(k.cache, sha256.Sum256([]byte(token)))
	k.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, k.base+"/auth/tokens", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("X-Subject-Token", token)
	res, err := k.c.Client.Do(req)
	if err != nil {
		return fmt.Errorf("keystone: revoke token: %w", err)
	}
	res.Body.Close()
	switch res.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		return nil
	case http.StatusNotFound, http.StatusUnauthorized:
		return ErrInvalidToken
	}
	return fmt.Errorf("keystone: revoke token: %s", res.Status)
}
