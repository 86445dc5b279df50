package compute

import (
	"context"
	"time"
)

// KeptClone is a copy of a volume that a driver keeps on this node's
// disks between backups, so that the next backup of the volume reads only
// what changed since (the local driver's kept reflink clone of the
// volume's last committed backup). It is the driver's, never user data:
// dropping it only makes the next backup read the volume whole.
type KeptClone struct {
	// ServerID is the server the volume belonged to when the clone was
	// kept; "" when the clone does not say (kept by an older csbs).
	ServerID string
	VolumeID string
	// BackupID is the backup that read the clone.
	BackupID string
	// Path is the kept clone; Source the image it is a clone of.
	Path   string
	Source string
	KeptAt time.Time
	// ApparentBytes is the clone's size. ExclusiveBytes is what it holds
	// that no other file shares: the space dropping it frees, which grows
	// as the volume is rewritten.
	ApparentBytes  int64
	ExclusiveBytes int64
}

// Keeper is implemented by drivers that keep clones of volumes between
// backups (the local driver), so that their cost can be seen and they can
// be dropped. Dropping too much is safe: the next backup of the volume
// then reads it whole, and says why.
type Keeper interface {
	// KeptClones lists the clones kept on this node's disks, including
	// those of volumes no longer in the inventory. It reads their records
	// and sizes only: ExclusiveBytes is 0 until MeasureKept.
	KeptClones(ctx context.Context) ([]KeptClone, error)
	// MeasureKept sets k.ExclusiveBytes from the clone's extents now (it
	// walks its whole extent map: a cost that grows with fragmentation).
	MeasureKept(ctx context.Context, k *KeptClone) error
	// DropKept removes a clone that KeptClones listed (by its Path). One
	// that is already gone is no error.
	DropKept(ctx context.Context, k KeptClone) error
}
