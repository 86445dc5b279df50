package service

import (
	"context"

	"github.com/csbs/csbs/internal/store"
)

// markNodeWaits sets Info.WaitingFor on the backups among items whose
// pending job (backup, restore) must run on a node that is down, so that a
// client sees why a backup stays protecting: the status itself stays what
// clients expect. Only backups in a transient status are looked up.
func (s *Service) markNodeWaits(ctx context.Context, items []*store.Item) error {
	var ids []string
	for _, it := range items {
		switch it.Status {
		case store.StatusWaitingProtect, store.StatusProtecting, store.StatusWaitingRestore, store.StatusRestoring:
			ids = append(ids, it.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	waits, err := s.store.NodeWaits(ctx, ids, s.now())
	if err != nil {
		return err
	}
	for _, it := range items {
		if w, ok := waits[it.ID]; ok {
			it.Info.WaitingFor = &w
		}
	}
	return nil
}
