// Package store keeps the records of the service — checkpoints, backups
// (checkpoint items), jobs — in SQLite (the embedded default) or PostgreSQL.
//
// Both databases run the same SQL through database/sql; the few places where
// they differ (placeholders, row locking, upserts) are in dialect.go. The
// schema is migrated at Open.
//
// Records carry the columns that queries filter and sort on; everything else
// about a backup lives in a JSON document (Item.Info) so that the API can grow
// fields without schema changes.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

var (
	// ErrNotFound means no record with that id exists in the project asked
	// for. Records of other projects are reported the same way.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a uniqueness rule was hit: a backup of the same
	// server is already waiting or running.
	ErrConflict = errors.New("conflict")
	// ErrFull means the database could not write: its disk is full. Nothing
	// of the transaction was written; free space and try again.
	ErrFull = errors.New("the database's disk is full")
	// ErrLeaseLost means a job's lease expired and another worker may own it
	// now; the caller must stop working on the job.
	ErrLeaseLost = errors.New("job lease lost")
	// ErrBadMarker means ItemFilter.Marker names no backup the caller can
	// see; the client should restart paging without a marker.
	ErrBadMarker = errors.New("marker names no backup")
	// ErrBadSortKey means an ItemFilter.Sort key is not one of the keys
	// ListItems sorts by.
	ErrBadSortKey = errors.New("unknown sort key")
)

// Item statuses, as the API names them.
const (
	StatusWaitingProtect = "waiting_protect"
	StatusProtecting     = "protecting"
	StatusAvailable      = "available"
	StatusWaitingRestore = "waiting_restore"
	StatusRestoring      = "restoring"
	StatusError          = "error"
	StatusWaitingDelete  = "waiting_delete"
	StatusDeleting       = "deleting"
	StatusDeleted        = "deleted"
)

// ItemStatuses lists every item status.
var ItemStatuses = []string{
	StatusWaitingProtect, StatusProtecting, StatusAvailable, StatusWaitingRestore, StatusRestoring,
	StatusError, StatusWaitingDelete, StatusDeleting, StatusDeleted,
}

// Checkpoint is a backup record: the result of one protect request (one
// server) or one policy execution (all its servers).
type Checkpoint struct {
	ID        string
	ProjectID string
	PlanID    string // the policy id; a generated "fake_…" id for manual backups
	PlanName  string
	Resources []Resource
	ExtraInfo json.RawMessage // the request's extra_info, or nil
	CreatedAt time.Time
}

// Resource is one server a checkpoint covers.
type Resource struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Name      string          `json:"name"`
	ExtraInfo json.RawMessage `json:"extra_info,omitempty"`
}

// Tag is a key/value label of a backup or policy.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Item is a backup of one server (a checkpoint item).
type Item struct {
	ID           string
	CheckpointID string
	ProjectID    string
	Name         string
	Description  string
	ResourceID   string
	ResourceName string
	ResourceType string
	ResourceAZ   string
	PolicyID     string // "" for manual backups
	Status       string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	Tags         []Tag
	Info         ItemInfo
}

// ItemInfo is what a backup reports about itself (extend_info, backup_data)
// and what csbs needs to restore or delete it.
type ItemInfo struct {
	AutoTrigger      bool           `json:"auto_trigger"`
	Incremental      bool           `json:"incremental"`
	Progress         int            `json:"progress"`
	SizeBytes        int64          `json:"size_bytes"`   // reported size: used data (full) or changed data (incremental)
	UsedBytes        int64          `json:"used_bytes"`   // data in the disks, holes and zeros excluded
	StoredBytes      int64          `json:"stored_bytes"` // bytes this backup added to the repository
	ReadBytes        int64          `json:"read_bytes"`   // bytes read so far (progress)
	SpaceSavingRatio int            `json:"space_saving_ratio"`
	AverageSpeedKBps int64          `json:"average_speed"`
	StartedAt        *time.Time     `json:"started_at,omitempty"`
	FinishedAt       *time.Time     `json:"finished_at,omitempty"`
	FailOp           string         `json:"fail_op,omitempty"`
	FailReason       string         `json:"fail_reason,omitempty"`
	FailCode         string         `json:"fail_code,omitempty"`
	TaskID           string         `json:"task_id,omitempty"`
	CreatedBy        string         `json:"created_by,omitempty"` // manual | auto
	BackupData       BackupData     `json:"backup_data"`
	Volumes          []VolumeBackup `json:"volumes"`
	SnapshotID       string         `json:"snapshot_id,omitempty"` // the repository snapshot holding the data
	CrashConsistent  bool           `json:"crash_consistent"`
	Quiesced         bool           `json:"quiesced,omitempty"` // the guest froze its file systems for the snapshot
	SnapshotMethod   string         `json:"snapshot_method,omitempty"`
	ParentItemID     string         `json:"parent_item_id,omitempty"` // the backup an incremental was compared with

	// WaitingFor, when not nil, names the node that is down and that the
	// backup's pending job must run on. Derived when read, never stored.
	WaitingFor *NodeWait `json:"-"`
	// Verified is the backup's last verification (nil: never verified).
	// Read from the verifications, never stored here.
	Verified *Verification `json:"-"`
}

// BackupData is the server's metadata at backup time.
type BackupData struct {
	VCPUs     int    `json:"vcpus"`
	RAM       int    `json:"ram"`
	Disk      int64  `json:"disk"` // system disk size in GB
	PrivateIP string `json:"private_ip"`
	EIP       string `json:"eip"`
	Region    string `json:"region"`
}

// VolumeBackup is the backup of one disk inside an item.
type VolumeBackup struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	SourceVolumeID   string `json:"source_volume_id"`
	SourceVolumeName string `json:"source_volume_name"`
	SourceVolumeSize int64  `json:"source_volume_size"` // GB
	SourceSizeBytes  int64  `json:"source_size_bytes"`
	Bootable         bool   `json:"bootable"`
	Incremental      bool   `json:"incremental"`
	Status           string `json:"status"`
	SizeBytes        int64  `json:"size_bytes"`
	UsedBytes        int64  `json:"used_bytes"`
	StoredBytes      int64  `json:"stored_bytes"`
	SpaceSavingRatio int    `json:"space_saving_ratio"`
	AverageSpeedMBps int64  `json:"average_speed"`
	SnapshotID       string `json:"snapshot_id"`
	ReadBytes        int64  `json:"read_bytes,omitempty"`  // bytes read from the disk (changed extents only, or all allocated)
	ReadReason       string `json:"read_reason,omitempty"` // how the disk was read, and why
}

// Job statuses.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
)

// Job is one unit of asynchronous work (a backup of one server, a delete, a
// restore, a garbage collection). Jobs are claimed with a lease that the
// worker renews while it works; a job whose lease expired (its worker died)
// is claimed again by the next ClaimJob.
type Job struct {
	ID           string
	Kind         string // protect | delete | restore | gc
	ProjectID    string
	CheckpointID string
	ItemID       string
	PlanID       string
	RestoreID    string
	Args         json.RawMessage
	Status       string
	Attempt      int // incremented by every claim
	LeaseOwner   string
	LeaseUntil   time.Time
	Error        string
	CreatedAt    time.Time
	StartedAt    *time.Time
	FinishedAt   *time.Time
	// Node is the node that must run the job (the one whose compute driver
	// has the server); "" lets any node run it.
	Node string
}

// ItemFilter selects backups for ListItems and CountItems. Zero fields do
// not filter.
type ItemFilter struct {
	AllTenants   bool     // ignore the project (admin only; the caller checks)
	Statuses     []string // any of these; empty: every status
	Name         string   // substring
	ResourceID   string
	ResourceName string // substring
	AZ           string
	PolicyID     string
	CheckpointID string
	ResourceType string
	ImageType    string // only "backup" exists; anything else matches nothing
	IP           string // private_ip of the server at backup time (count only in the reference)
	StartTime    *time.Time
	EndTime      *time.Time

	// Sort keys in order: created_at, updated_at, name, status, protected_at, id.
	Sort   []SortKey
	Limit  int    // 0 = no limit
	Offset int    // rows to skip after the marker
	Marker string // id of the last item of the previous page
}

// SortKey is one column of a sort order.
type SortKey struct {
	Key  string
	Desc bool
}

// Tx is everything that can be read or written; inside Store.InTx all calls
// commit or roll back together.
type Tx interface {
	// InsertCheckpoint stores a checkpoint.
	InsertCheckpoint(ctx context.Context, cp *Checkpoint) error
	// GetCheckpoint returns a checkpoint of the project, or ErrNotFound.
	GetCheckpoint(ctx context.Context, projectID, id string) (*Checkpoint, error)

	// InsertItem stores a new backup. It returns ErrConflict when another
	// backup of the same resource is waiting_protect or protecting.
	InsertItem(ctx context.Context, it *Item) error
	// GetItem returns a backup of the project that is not deleted, or ErrNotFound.
	GetItem(ctx context.Context, projectID, id string) (*Item, error)
	// GetItemAnyProject returns a backup by id whatever its project, deleted
	// or not; for workers, never for requests.
	GetItemAnyProject(ctx context.Context, id string) (*Item, error)
	// ItemsOfCheckpoint returns the non-deleted backups of a checkpoint.
	ItemsOfCheckpoint(ctx context.Context, projectID, checkpointID string) ([]*Item, error)
	// ListItems returns the non-deleted backups matching f, sorted and paged.
	ListItems(ctx context.Context, projectID string, f ItemFilter) ([]*Item, error)
	// CountItems counts the non-deleted backups matching f (paging ignored).
	CountItems(ctx context.Context, projectID string, f ItemFilter) (int, error)
	// LatestItem returns the newest backup of a resource whose status is one
	// of statuses, created before the given time, or ErrNotFound.
	LatestItem(ctx context.Context, projectID, resourceID string, statuses []string, before time.Time) (*Item, error)
	// UpdateItem writes the mutable fields of it (status, name, info) and
	// sets UpdatedAt. ErrNotFound when it does not exist. It leaves the
	// tags alone (UpdateItemTags changes them), so that a worker holding an
	// old copy of a backup never undoes a tag change.
	UpdateItem(ctx context.Context, it *Item) error
	// SetItemStatus moves a backup to status to when its status is one of
	// from; it reports whether it did.
	SetItemStatus(ctx context.Context, id string, from []string, to string) (bool, error)

	// Restores (issue 3; restores.go).

	// InsertRestore stores a new restore. It returns ErrConflict when
	// another restore onto the same server is in progress.
	InsertRestore(ctx context.Context, r *Restore) error
	// GetRestore returns a restore of the project, or ErrNotFound.
	GetRestore(ctx context.Context, projectID, id string) (*Restore, error)
	// GetRestoreAnyProject returns a restore by id whatever its project; for
	// workers, never for requests.
	GetRestoreAnyProject(ctx context.Context, id string) (*Restore, error)
	// ListRestores returns the restores of the project matching f, newest
	// first; ErrBadMarker when f.Marker names no restore of the project.
	ListRestores(ctx context.Context, projectID string, f RestoreFilter) ([]*Restore, error)
	// UpdateRestore writes the status and resources fields of r and sets
	// UpdatedAt. ErrNotFound when it does not exist.
	UpdateRestore(ctx context.Context, r *Restore) error

	// Policies (issue 4; policies.go).

	// InsertPolicy stores a policy with its scheduled operations and binds
	// its servers to it; ErrConflict when a server belongs to a policy.
	InsertPolicy(ctx context.Context, p *Policy) error
	// GetPolicy returns a policy of the project, or ErrNotFound.
	GetPolicy(ctx context.Context, projectID, id string) (*Policy, error)
	// ListPolicies returns the policies matching f, sorted and paged;
	// ErrBadMarker, ErrBadSortKey as ListItems.
	ListPolicies(ctx context.Context, projectID string, f PolicyFilter) ([]*Policy, error)
	// CountPolicies counts the policies of the project.
	CountPolicies(ctx context.Context, projectID string) (int, error)
	// UpdatePolicy writes every mutable field of a policy (name,
	// description, parameters, resources, tags, operations) and sets
	// UpdatedAt; ErrNotFound, or ErrConflict when a server belongs to
	// another policy.
	UpdatePolicy(ctx context.Context, p *Policy) error
	// DeletePolicy removes a policy (its backups stay), or ErrNotFound.
	DeletePolicy(ctx context.Context, projectID, id string) error
	// PolicyOfResource returns the id of the policy of a server, or
	// ErrNotFound.
	PolicyOfResource(ctx context.Context, projectID, resourceID string) (string, error)
	// DueOperations returns the enabled operations whose next fire time
	// is at or before t.
	DueOperations(ctx context.Context, t time.Time) ([]DueOperation, error)
	// AdvanceOperation compares-and-sets an operation's next fire time.
	AdvanceOperation(ctx context.Context, operationID string, from time.Time, to *time.Time) (bool, error)
	// InsertFire records a fire time of an operation once; false when it
	// was recorded before.
	InsertFire(ctx context.Context, operationID string, fireTime time.Time, policyID, checkpointID string) (bool, error)

	// InsertJob queues a job.
	InsertJob(ctx context.Context, j *Job) error
	// GetJob returns a job by id, or ErrNotFound.
	GetJob(ctx context.Context, id string) (*Job, error)

	// ListItemTags returns the id, name and tags of every non-deleted
	// backup of the project, newest first.
	ListItemTags(ctx context.Context, projectID string) ([]TaggedResource, error)
	// UpdateItemTags sets the tags of a non-deleted backup of the project
	// to what fn returns for the current ones (nil when it has none). fn
	// may run more than once when another writer changed the tags
	// meanwhile; an error of fn is returned as is and changes nothing.
	// ErrNotFound when there is no such backup. Tags change only through
	// InsertItem and UpdateItemTags.
	UpdateItemTags(ctx context.Context, projectID, id string, fn func([]Tag) ([]Tag, error)) error
	// ListPolicyTags is ListItemTags of the project's policies.
	ListPolicyTags(ctx context.Context, projectID string) ([]TaggedResource, error)
	// UpdatePolicyTags is UpdateItemTags of a policy of the project.
	UpdatePolicyTags(ctx context.Context, projectID, id string, fn func([]Tag) ([]Tag, error)) error
	// ItemSizes returns the sizes of the non-deleted backups of the
	// project, by resource and oldest first.
	ItemSizes(ctx context.Context, projectID string) ([]ItemSize, error)

	// ListJobs returns the jobs of the project matching f, newest first.
	// ErrBadMarker when f.Marker names no job of the project.
	ListJobs(ctx context.Context, projectID string, f JobFilter) ([]*Job, error)
	// GetProjectJob returns a job of the project, or ErrNotFound.
	GetProjectJob(ctx context.Context, projectID, id string) (*Job, error)
	// DeleteFailedJob removes a failed job of the project; ErrNotFound
	// when there is no such job, ErrJobNotFailed when it has not failed.
	DeleteFailedJob(ctx context.Context, projectID, id string) error
	// DeleteFailedJobs removes the failed jobs of the project of the given
	// kinds (all kinds when empty) and returns how many it removed.
	DeleteFailedJobs(ctx context.Context, projectID string, kinds []string) (int, error)

	// RevokeToken records that the token with id is revoked until expires
	// (its own expiry); revoking twice is not an error.
	RevokeToken(ctx context.Context, id string, expires time.Time) error
	// TokenRevoked reports whether the token with id was revoked.
	TokenRevoked(ctx context.Context, id string) (bool, error)
}

// Store is a database of records. It is safe for concurrent use.
type Store interface {
	Tx
	Nodes
	Verifications
	// InTx runs fn in one transaction: every change fn makes commits
	// together, or none does when fn returns an error.
	InTx(ctx context.Context, fn func(tx Tx) error) error

	// ClaimJob leases the oldest queued job, or a running job whose lease has
	// expired, to owner until now+lease, increments its Attempt and marks it
	// running. With node set it takes only jobs of that node and jobs of no
	// node; with node "" any job (a single-node installation). It returns
	// (nil, nil) when there is nothing to do. Two concurrent claims never
	// get the same job.
	ClaimJob(ctx context.Context, owner, node string, lease time.Duration) (*Job, error)
	// RenewLease extends the lease of a running job owned by owner, or
	// returns ErrLeaseLost.
	RenewLease(ctx context.Context, jobID, owner string, lease time.Duration) error
	// FinishJob marks a job owned by owner succeeded (errMsg "") or failed,
	// or returns ErrLeaseLost.
	FinishJob(ctx context.Context, jobID, owner, errMsg string) error
	// CountJobs counts jobs by status (queued + running = the queue depth).
	CountJobs(ctx context.Context, status string) (int, error)
	// OldestJob returns when the oldest job with status was created, or
	// the zero time when there is none (the age of the queue's head).
	OldestJob(ctx context.Context, status string) (time.Time, error)

	// Generation returns a number that changes after every write this Store
	// made (committed, for a transaction). Writes by other processes sharing
	// the database do not change it; a cache keyed on it must also expire.
	Generation() uint64

	Close() error
}
