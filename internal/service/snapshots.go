package service

import (
	"fmt"

	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/store"
)

// checkSnapshot refuses a repository snapshot that is not the one of
// backup it: every snapshot names the backup and project it was made for,
// and a database that points a backup at another backup's (or another
// project's) data must never restore or show it.
func checkSnapshot(snap *repository.Snapshot, it *store.Item) error {
	if snap.Meta["item_id"] != it.ID || snap.Meta["project_id"] != it.ProjectID {
		return fmt.Errorf("backup %s: the repository's snapshot %s was made for backup %q of project %q, not for this one; nothing was read (run csbs repo verify, and check the database)",
			it.ID, snap.ID, snap.Meta["item_id"], snap.Meta["project_id"])
	}
	return nil
}
