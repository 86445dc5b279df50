// Package compute answers where servers and their disks are: which servers a
// project has, what state they are in, and how to read (or write) their
// volumes at a point in time. A Driver hides the platform; the local driver
// (package compute/local) reads an inventory file.
package compute

import (
	"context"
	"errors"
)

// ErrNotFound means the server does not exist in the project asked for. A
// server of another project is reported the same way, so drivers never leak
// the existence of other projects' servers.
var ErrNotFound = errors.New("server not found")

// Server is a machine whose disks csbs protects.
type Server struct {
	ID        string
	Name      string
	ProjectID string
	AZ        string // availability zone, "az1" when the inventory says nothing
	Status    string // ACTIVE, SHUTOFF, ERROR, ...
	VCPUs     int
	RAM       int // MB
	PrivateIP string

	// StopCommand and StartCommand are run (argv, no shell) around a restore.
	StopCommand  []string
	StartCommand []string

	Volumes []Volume

	// Node is the csbs node whose driver has the server's disks, where its
	// backups and restores must run; "" in a single-node installation. Set
	// by the cluster-wide view (package cluster), not by drivers.
	Node string
}

// Protectable reports whether a server's status allows a backup.
func (s Server) Protectable() bool { return s.Status == "ACTIVE" || s.Status == "SHUTOFF" }

// Volume is one disk of a server.
type Volume struct {
	ID        string
	Name      string
	Path      string // regular file or block device
	Size      int64  // bytes; 0 when the path could not be read
	Bootable  bool   // the system disk
	Shareable bool
}

// SizeGB is the volume size in whole GB, rounded up, as the API reports it.
func (v Volume) SizeGB() int64 { return (v.Size + 1<<30 - 1) >> 30 }

// Snapshot is a point-in-time view of all volumes of one server. Release it
// when done; until then the paths stay readable and unchanged (when
// CrashConsistent) even if the server keeps writing.
type Snapshot struct {
	// CrashConsistent is true when all volumes were captured at one instant
	// (reflink clones, LVM snapshots). False means the volumes were read live
	// and the backup must say so.
	CrashConsistent bool
	// Method names how the snapshot was taken: "reflink" or "live".
	Method  string
	Volumes []SnapshotVolume

	release func() error
}

// SnapshotVolume is where to read one volume of a snapshot from.
type SnapshotVolume struct {
	Volume Volume
	Path   string // the frozen copy, or the live path when not crash-consistent
	Size   int64  // bytes, measured when the snapshot was taken
}

// NewSnapshot builds a Snapshot; release (may be nil) is called by Release.
func NewSnapshot(consistent bool, method string, vols []SnapshotVolume, release func() error) *Snapshot {
	return &Snapshot{CrashConsistent: consistent, Method: method, Volumes: vols, release: release}
}

// Release frees what the snapshot holds (clone files). It is safe to call twice.
func (s *Snapshot) Release() error {
	if s == nil || s.release == nil {
		return nil
	}
	r := s.release
	s.release = nil
	return r()
}

// VolumeError says which disk of a server could not be read or written, so
// failures name the disk.
type VolumeError struct {
	VolumeID string
	Name     string
	Path     string
	Err      error
}

func (e *VolumeError) Error() string {
	return "disk " + e.Name + " (" + e.VolumeID + ") at " + e.Path + ": " + e.Err.Error()
}

func (e *VolumeError) Unwrap() error { return e.Err }

// Driver is the platform that hosts servers. Implementations are safe for
// concurrent use.
type Driver interface {
	// Server returns one server of a project, or ErrNotFound.
	Server(ctx context.Context, projectID, id string) (Server, error)
	// Servers lists the servers of a project (all projects when projectID is "").
	Servers(ctx context.Context, projectID string) ([]Server, error)
	// Snapshot freezes all volumes of s together where the platform allows,
	// otherwise returns a live, not crash-consistent view. A volume that
	// cannot be opened fails the whole snapshot with a *VolumeError.
	Snapshot(ctx context.Context, s Server) (*Snapshot, error)
	// RunCommand runs a server's stop or start command (argv, no shell); an
	// empty argv does nothing.
	RunCommand(ctx context.Context, argv []string) error
}
