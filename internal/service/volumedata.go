package service

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/store"
)

// readerIdle is how long a disk opened for reading through the API stays
// open after its last request: a mount reads in many small requests, and
// opening costs a lease and an index refresh.
const readerIdle = 30 * time.Second

// VolumeData is a disk of a backup opened for reading (csbs mount and
// csbs export through the API). Release it after each request; the disk
// stays open for readerIdle for the next one.
type VolumeData struct {
	io.ReaderAt
	Size    int64
	Release func()
}

// openReader is a VolumeReader shared by the requests of one disk.
type openReader struct {
	r     *repository.VolumeReader
	refs  int
	timer *time.Timer // closes it once idle
}

// readers are the disks opened for reading, by item id and volume id.
type readers struct {
	mu   sync.Mutex
	open map[string]*openReader
}

// VolumeData opens disk volumeID of backup itemID of the project. Only a
// backup that is available (or being restored from, which leaves it
// unchanged) can be read; its snapshot must be the one the database names
// for it, in this project.
func (s *Service) VolumeData(ctx context.Context, projectID, itemID, volumeID string) (*VolumeData, error) {
	it, err := s.Item(ctx, projectID, itemID)
	if err != nil {
		return nil, err
	}
	switch it.Status {
	case store.StatusAvailable, store.StatusWaitingRestore, store.StatusRestoring:
	default:
		return nil, errf(CodeItemExecuting, "item in executing: backup %s is %s; its disks can be read once it is available", it.ID, ClientStatus(it.Status))
	}
	key := it.ID + "/" + volumeID
	s.readers.mu.Lock()
	defer s.readers.mu.Unlock()
	if s.readers.open == nil {
		s.readers.open = map[string]*openReader{}
	}
	o := s.readers.open[key]
	if o == nil {
		snap, err := s.repo.LoadSnapshot(ctx, it.Info.SnapshotID)
		if errors.Is(err, repository.ErrNotFound) {
			return nil, errf(CodeItemNotFound, "Checkpoint_item (%s) is not found: its data is gone from the repository", it.ID)
		}
		if err != nil {
			return nil, err
		}
		if err := checkSnapshot(snap, it); err != nil {
			return nil, errf(CodeInternal, "%v", err)
		}
		var vm *repository.VolumeManifest
		for i := range snap.Volumes {
			if snap.Volumes[i].VolumeID == volumeID {
				vm = &snap.Volumes[i]
			}
		}
		if vm == nil {
			return nil, errf(CodeItemNotFound, "backup %s has no disk %s", it.ID, clipID(volumeID))
		}
		r, err := s.repo.OpenVolume(ctx, vm, 0)
		if err != nil {
			return nil, err
		}
		o = &openReader{r: r}
		s.readers.open[key] = o
	}
	o.refs++
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			s.readers.mu.Lock()
			defer s.readers.mu.Unlock()
			if o.refs--; o.refs == 0 {
				o.timer = time.AfterFunc(readerIdle, func() { s.closeIdle(key, o) })
			}
		})
	}
	return &VolumeData{ReaderAt: o.r, Size: o.r.Size(), Release: release}, nil
}

// closeIdle closes a reader nobody used for readerIdle.
func (s *Service) closeIdle(key string, o *openReader) {
	s.readers.mu.Lock()
	defer s.readers.mu.Unlock()
	if o.refs > 0 || s.readers.open[key] != o {
		return
	}
	delete(s.readers.open, key)
	o.r.Close()
}
