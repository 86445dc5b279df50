package service

import (
	"testing"

	"github.com/csbs/csbs/internal/store"
)

func TestClientStatus(t *testing.T) {
	for _, tc := range []struct {
		stored, client string
		queued         bool
	}{
		{store.StatusWaitingProtect, store.StatusProtecting, true},
		{store.StatusProtecting, store.StatusProtecting, false},
		{store.StatusAvailable, store.StatusAvailable, false},
		{store.StatusWaitingRestore, store.StatusWaitingRestore, false},
		{store.StatusRestoring, store.StatusRestoring, false},
		{store.StatusError, store.StatusError, false},
		{store.StatusWaitingDelete, store.StatusDeleting, true},
		{store.StatusDeleting, store.StatusDeleting, false},
		{store.StatusDeleted, store.StatusDeleted, false},
	} {
		if got := ClientStatus(tc.stored); got != tc.client {
			t.Errorf("ClientStatus(%s) = %s, want %s", tc.stored, got, tc.client)
		}
		if got := Queued(tc.stored); got != tc.queued {
			t.Errorf("Queued(%s) = %v, want %v", tc.stored, got, tc.queued)
		}
		// Every stored status is found by the filter of the status it shows.
		found := false
		for _, st := range StoredStatuses(tc.client) {
			found = found || st == tc.stored
		}
		if !found {
			t.Errorf("StoredStatuses(%s) = %v misses %s", tc.client, StoredStatuses(tc.client), tc.stored)
		}
	}
}
