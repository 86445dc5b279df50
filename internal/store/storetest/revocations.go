package storetest

import (
	"context"
	"testing"
	"time"
)

func testRevocations(t *testing.T, newDB NewDatabase) {
	ctx := context.Background()
	db := newDB(t)
	s := open(t, db)
	future := time.Now().Add(time.Hour)
	if ok, err := s.TokenRevoked(ctx, "t1"); err != nil || ok {
		t.Fatalf("TokenRevoked before revoking = %v, %v; want false", ok, err)
	}
	for i := 0; i < 2; i++ { // twice: not an error
		if err := s.RevokeToken(ctx, "t1", future); err != nil {
			t.Fatalf("RevokeToken #%d: %v", i+1, err)
		}
	}
	// An expired revocation is purged by the next RevokeToken.
	if err := s.RevokeToken(ctx, "old", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, "t2", future); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, db) // revocations outlive the process that made them
	for _, tc := range []struct {
		id   string
		want bool
	}{{"t1", true}, {"t2", true}, {"old", false}, {"t3", false}} {
		ok, err := s2.TokenRevoked(ctx, tc.id)
		if err != nil || ok != tc.want {
			t.Errorf("TokenRevoked(%s) = %v, %v; want %v", tc.id, ok, err, tc.want)
		}
	}
}
