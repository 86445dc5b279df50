// Package compute answers where servers and their disks are: which servers a
// project has, what state they are in, and how to read (or write) their
// volumes at a point in time. A Driver hides the platform: the local driver
// (package compute/local) reads an inventory file and image files, the
// libvirt driver (package compute/libvirt) asks libvirtd and reads disks
// through QEMU.
//
// # The contract of a snapshot
//
// Snapshot hands out readers, not paths. For every volume a snapshot offers
// (see VolumeReader):
//
//   - the guest-visible bytes through io.ReaderAt, Size bytes long: what the
//     server's operating system sees on the disk at the snapshot's instant
//     (never a container format's own bytes such as a qcow2 file's);
//   - its allocated extents: every byte outside them reads as zero, so a
//     backup never reads holes;
//   - its changed extents since the backup named in SnapshotRequest.Parent,
//     or "unknown" with a reason. Every byte that may differ from that
//     backup's copy of the volume lies inside a changed extent; extents may
//     cover more than changed (a whole cluster, a whole bitmap granule), never
//     less. When a driver cannot promise that, it says unknown and the backup
//     reads everything: an incremental that misses a change is the one fault
//     the contract forbids.
//
// Snapshot.Token is what the driver keeps to answer the next backup's
// Changed (a libvirt checkpoint name); the caller stores it with the backup
// and hands it back as SnapshotRequest.Parent.Token only when that backup
// was committed. Tokens are opaque to callers. The caller calls
// Snapshot.Commit once the backup is committed, before Release: a driver
// that keeps something per backup (the local driver's kept clones) then
// keeps this backup's and drops the older one's; without Commit it keeps
// what it had.
//
// A restore stops the server (Driver.Restore), writes each volume through a
// VolumeWriter that takes guest-visible bytes, and ends with Finish, which
// drops what the writes invalidated (the next backup's changes are then
// unknown) and starts the server when asked.
//
// Errors: a method that fails leaves nothing half-done that a retry cannot
// redo; a *VolumeError names the disk; ErrNotFound means the server is not in
// the project (or does not exist).
package compute

import (
	"context"
	"errors"
	"io"
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

	// StopCommand and StartCommand are run (argv, no shell) around a restore
	// by the local driver.
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
	Path      string // where the disk is (file, device), for messages; may be empty
	Size      int64  // bytes as the guest sees them; 0 when unknown
	Bootable  bool   // the system disk
	Shareable bool
}

// SizeGB is the volume size in whole GB, rounded up, as the API reports it.
func (v Volume) SizeGB() int64 { return (v.Size + 1<<30 - 1) >> 30 }

// Extent is the byte range [Off, Off+Len) of a volume.
type Extent struct {
	Off, Len int64
}

// End is the first byte after the extent.
func (e Extent) End() int64 { return e.Off + e.Len }

// Changes is what a snapshot volume knows of its changes since the parent
// backup.
type Changes struct {
	// Known is false when the driver cannot name the changes: the caller
	// must read every allocated byte. Reason then says why.
	Known bool
	// Reason says how the changes were found (Known) or why they are
	// unknown ("no parent backup", "checkpoint csbs-… is gone", "raw disk:
	// no dirty bitmap"); backups report it.
	Reason string
	// Extents are sorted, do not overlap, and cover every byte that may
	// differ from the parent's copy. Only meaningful when Known.
	Extents []Extent
}

// VolumeReader reads one volume of a snapshot. Its methods may be called
// concurrently; they fail once the snapshot is released.
type VolumeReader interface {
	// ReadAt reads guest-visible bytes; reading past Size is io.EOF.
	io.ReaderAt
	// Allocated returns the extents that may hold non-zero bytes, sorted
	// and not overlapping; every byte outside them reads as zero. A driver
	// that cannot tell returns one extent covering the volume.
	Allocated(ctx context.Context) ([]Extent, error)
	// Changed returns the changes since SnapshotRequest.Parent. An error
	// means the question could not be asked (the connection broke), not
	// that the answer is unknown.
	Changed(ctx context.Context) (Changes, error)
}

// SnapshotRequest says which backup a snapshot is for and which earlier
// backup its changes are counted from.
type SnapshotRequest struct {
	// BackupID names the backup being taken; a driver that keeps state for
	// the next incremental (a checkpoint) names it after this. A re-run of
	// the same backup replaces that state.
	BackupID string
	// Parent is the committed backup the next manifest is compared with;
	// nil when there is none (a full backup).
	Parent *Parent
}

// Parent is an earlier, committed backup of the same server.
type Parent struct {
	BackupID string
	Token    string // its Snapshot.Token
}

// Snapshot is a point-in-time view of all volumes of one server. Release it
// when done; until then the readers stay readable and unchanged (when
// CrashConsistent) even if the server keeps writing.
type Snapshot struct {
	// CrashConsistent is true when all volumes were captured at one instant
	// (reflink clones, one QEMU backup job). False means the volumes were
	// read live or one after the other, and the backup must say so.
	CrashConsistent bool
	// Quiesced is true when the guest flushed and froze its file systems
	// for the instant of the snapshot (QEMU guest agent): application-
	// consistent as far as the guest's file systems go.
	Quiesced bool
	// Method names how the snapshot was taken: "reflink", "reflink-per-disk",
	// "live", "libvirt-backup", "qemu-nbd".
	Method string
	// Token is what the driver kept for the next backup's changes ("" when
	// nothing); see the package doc.
	Token   string
	Volumes []SnapshotVolume

	release func() error
	commit  func() error
}

// SnapshotVolume is one volume of a snapshot.
type SnapshotVolume struct {
	Volume Volume
	Path   string // the file read, when there is one (the clone or the live path), for messages
	Size   int64  // guest-visible bytes, measured when the snapshot was taken
	Reader VolumeReader
}

// NewSnapshot builds a Snapshot; release (may be nil) is called by Release.
func NewSnapshot(consistent bool, method string, vols []SnapshotVolume, release func() error) *Snapshot {
	return &Snapshot{CrashConsistent: consistent, Method: method, Volumes: vols, release: release}
}

// Release frees what the snapshot holds (clone files, a backup job, NBD
// connections). It is safe to call twice.
func (s *Snapshot) Release() error {
	if s == nil || s.release == nil {
		return nil
	}
	r := s.release
	s.release = nil
	return r()
}

// SetCommit sets what Commit does; for drivers.
func (s *Snapshot) SetCommit(f func() error) { s.commit = f }

// Commit tells the driver that the backup the snapshot was taken for is
// committed (its token will be handed back as the next backup's parent):
// what the driver kept for an earlier backup may go. Call it at most once,
// before Release. An error means the driver kept nothing for the next
// backup, which then reads everything; the backup itself is intact.
func (s *Snapshot) Commit() error {
	if s == nil || s.commit == nil {
		return nil
	}
	c := s.commit
	s.commit = nil
	return c()
}

// VolumeWriter writes guest-visible bytes to one volume during a restore.
type VolumeWriter interface {
	io.WriterAt
	// Zero makes n bytes at off read as zeros, cheaply where the platform
	// can (holes, zero clusters).
	Zero(ctx context.Context, off, n int64) error
	// Close makes every write durable and releases the writer. An error
	// means the volume may not hold what was written: the restore failed.
	Close() error
}

// Restore is a restore in progress on one server, between Driver.Restore
// and Finish.
type Restore interface {
	// Open returns a writer for v, one of the server's volumes. Writes
	// start from the volume's current contents: callers zero or write
	// every byte of the volume.
	Open(ctx context.Context, v Volume) (VolumeWriter, error)
	// Finish ends the restore after every writer was closed: it drops what
	// the writes invalidated (changed-block state, so the next backup reads
	// all) and starts the server when powerOn.
	Finish(ctx context.Context, powerOn bool) error
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
	at := ""
	if e.Path != "" {
		at = " at " + e.Path
	}
	return "disk " + e.Name + " (" + e.VolumeID + ")" + at + ": " + e.Err.Error()
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
	// otherwise returns a live, not crash-consistent view (see the package
	// doc for what its volumes promise). A volume that cannot be opened
	// fails the whole snapshot with a *VolumeError.
	Snapshot(ctx context.Context, s Server, req SnapshotRequest) (*Snapshot, error)
	// Restore stops s (nothing is written when it fails) and returns the
	// restore through which its volumes are written.
	Restore(ctx context.Context, s Server) (Restore, error)
}

// NoChanges is the Changes of a volume without a parent to compare with.
func NoChanges(reason string) Changes { return Changes{Reason: reason} }
