package api

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/csbs/csbs/internal/auth"
	"github.com/csbs/csbs/internal/store"
)

// adminRouteServers returns what the refusal tests of admin-only routes
// need: a server without authentication (open), one with builtin identity
// (authed) and the token of a user who is a member, not an admin, of
// project p1. Neither server has a service: a refusal must come first.
func adminRouteServers(t *testing.T) (open, authed *Server, member string) {
	t.Helper()
	open = New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	db, err := store.Open(context.Background(), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b, err := auth.NewBuiltin(auth.BuiltinConfig{Key: make([]byte, 32), Revocations: db,
		Users: []auth.User{{Name: "u", Password: "p", Projects: []auth.Project{{ID: "p1", Name: "p1", Roles: []string{"member"}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	member, _, err = b.Issue(context.Background(), auth.Credentials{UserName: "u", UserDomainName: "Default", Password: "p", ProjectID: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	return open, New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), WithAuth(b, "r1")), member
}
