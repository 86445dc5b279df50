package auth

import (
	"strings"
	"testing"
)

// FuzzVerify: no input makes verify panic, and only tokens signed with the
// key pass it.
func FuzzVerify(f *testing.F) {
	s := signer{key: []byte("0123456789abcdef0123456789abcdef")}
	good, _ := s.sign(claims{ID: "a", UserID: "u", ProjectID: "p", Roles: []string{"admin"}, ExpiresAt: 1})
	f.Add(good)
	f.Add(tokenPrefix + ".")
	f.Add(tokenPrefix + "e30.")
	f.Add(strings.Replace(good, "csbs1.", "csbs1..", 1))
	body := good[:strings.LastIndexByte(good, '.')]
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := s.verify(tok)
		if err != nil {
			return
		}
		// Only good was signed: whatever passes carries its exact payload.
		if i := strings.LastIndexByte(tok, '.'); i < 0 || tok[:i] != body || c.ID != "a" || c.UserID != "u" {
			t.Fatalf("verify accepted %q as %+v", tok, c)
		}
	})
}
