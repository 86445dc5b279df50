package service

import "github.com/csbs/csbs/internal/store"

// Clients of the real cloud wait on backups with fixed state lists: the
// Terraform provider waits for a new backup with pending "protecting" and
// target "available", and for a deleted one accepting only "available" and
// "deleting" on the way. A job that waits for a free worker is therefore
// shown in the state it is waiting to run, never as waiting_protect or
// waiting_delete: the database keeps the distinction (extend_info.queued
// tells it), the status does not.

// ClientStatus is the status clients see for a backup stored with status.
func ClientStatus(status string) string {
	switch status {
	case store.StatusWaitingProtect:
		return store.StatusProtecting
	case store.StatusWaitingDelete:
		return store.StatusDeleting
	}
	return status
}

// Queued reports whether a backup stored with status waits for a worker.
func Queued(status string) bool {
	return status == store.StatusWaitingProtect || status == store.StatusWaitingDelete
}

// StoredStatuses are the stored statuses a status filter of the reference
// matches: the status itself and those shown as it. So "protecting" finds
// queued backups too, and "waiting_protect" finds only the queued ones
// (which show as protecting, with extend_info.queued).
func StoredStatuses(filter string) []string {
	out := []string{filter}
	for _, st := range store.ItemStatuses {
		if st != filter && ClientStatus(st) == filter {
			out = append(out, st)
		}
	}
	return out
}
