package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// tokenPrefix starts every builtin token; it names the format version.
const tokenPrefix = "csbs1."

// claims is the signed payload of a builtin token. It is compact because it
// travels in a header on every request.
type claims struct {
	ID        string `json:"i"` // audit id: random, what revocation records
	UserID    string `json:"u"`
	ProjectID string `json:"p"`
	// DomainID is set instead of ProjectID for a domain-scoped token.
	DomainID  string   `json:"d,omitempty"`
	Roles     []string `json:"r"`
	Methods   []string `json:"m,omitempty"`
	IssuedAt  int64    `json:"t"` // unix microseconds
	ExpiresAt int64    `json:"e"` // unix microseconds
}

// signer makes and checks tokens with an HMAC-SHA256 key.
type signer struct{ key []byte }

func (s signer) mac(msg string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// sign returns the token of c: prefix, base64url payload, '.', base64url MAC.
func (s signer) sign(c claims) (string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	body := tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return body + "." + base64.RawURLEncoding.EncodeToString(s.mac(body)), nil
}

// verify returns the claims of a token whose MAC is right; it does not
// look at expiry or revocation. The MAC is compared in constant time, and
// before the payload is parsed, so forged input never reaches the decoder.
func (s signer) verify(token string) (claims, error) {
	var c claims
	if len(token) > 4096 || !strings.HasPrefix(token, tokenPrefix) {
		return c, ErrInvalidToken
	}
	i := strings.LastIndexByte(token, '.')
	if i < len(tokenPrefix) {
		return c, ErrInvalidToken
	}
	body, sig := token[:i], token[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(body)) {
		return c, ErrInvalidToken
	}
	payload, err := base64.RawURLEncoding.DecodeString(body[len(tokenPrefix):])
	if err != nil || json.Unmarshal(payload, &c) != nil || c.ID == "" || c.UserID == "" {
		return c, ErrInvalidToken
	}
	return c, nil
}

// newAuditID returns a random id in the form of Keystone's audit ids.
func newAuditID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// LoadOrCreateKey returns the token signing key kept in path, creating the
// file (32 random bytes, hex, mode 0600) when it does not exist. Processes
// starting at once agree on one key: the file appears complete or not at
// all. Whoever holds the key can forge tokens; keep it like a password.
func LoadOrCreateKey(path string) ([]byte, error) {
	if key, err := readKey(path); !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".token-key-*")
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.WriteString(hex.EncodeToString(raw) + "\n")
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("token key: write %s: %w", tmp.Name(), err)
	}
	// Link fails when another process created the key first; then use theirs.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("token key: create %s: %w", path, err)
	}
	return readKey(path)
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("token key %s: want at least 64 hex digits; delete the file to generate a new key (every token issued so far becomes invalid)", path)
	}
	return key, nil
}

func micros(t time.Time) int64      { return t.UnixMicro() }
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
