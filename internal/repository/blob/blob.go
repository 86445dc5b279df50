// Package blob defines where a repository keeps its files: a flat store of
// named, immutable objects grouped by type. Implementations: package
// blob/local (a directory) and package blob/s3 (an S3-compatible bucket);
// package blob/blobtest checks an implementation against this contract.
//
// Every object is written once and never modified; it is only ever created
// (atomically) or removed. The repository relies on that: a reader never sees
// a half-written object, and an object that exists is complete.
package blob

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// FileType is the kind of an object; it selects the directory (or key
// prefix) the object lives under.
type FileType int

// The object types of a repository.
const (
	ConfigFile     FileType = iota // "config", the only object of its type; Name is ignored
	KeyFile                        // keys/<id>: the master key wrapped by a password
	PackFile                       // data/<2 hex>/<id>: encrypted chunks plus a trailer
	IndexFile                      // index/<id>: what the pack of the same id holds
	SnapshotFile                   // snapshots/<id>: one backup's manifests
	LeaseFile                      // leases/<id>: a process working on the repository, re-saved as heartbeat
	QuarantineFile                 // quarantine/<id>: a record of damaged chunk copies that no process may use
	DamagedFile                    // damaged/<id>: a pack GC could not read, moved out of data/ instead of deleted
)

// Types lists every FileType that List accepts.
var Types = []FileType{ConfigFile, KeyFile, PackFile, IndexFile, SnapshotFile, LeaseFile, QuarantineFile, DamagedFile}

func (t FileType) String() string {
	switch t {
	case ConfigFile:
		return "config"
	case KeyFile:
		return "key"
	case PackFile:
		return "pack"
	case IndexFile:
		return "index"
	case SnapshotFile:
		return "snapshot"
	case LeaseFile:
		return "lease"
	case QuarantineFile:
		return "quarantine"
	case DamagedFile:
		return "damaged"
	}
	return fmt.Sprintf("FileType(%d)", int(t))
}

// Handle names one object.
type Handle struct {
	Type FileType
	Name string
}

func (h Handle) String() string {
	if h.Type == ConfigFile {
		return "config"
	}
	return h.Type.String() + "/" + h.Name
}

// Valid reports whether h can name an object: names are non-empty and
// consist of lowercase hex digits only (so a name can never escape its
// directory), except for the config file, which has no name.
func (h Handle) Valid() bool {
	if h.Type == ConfigFile {
		return true
	}
	if h.Type < ConfigFile || h.Type > DamagedFile || len(h.Name) < 2 || len(h.Name) > 128 {
		return false
	}
	for _, c := range h.Name {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// FileInfo describes a stored object.
type FileInfo struct {
	Name string
	Size int64
	// ModTime is when the object was last saved, by the storage's clock
	// (a file's modification time, an S3 object's LastModified). The
	// repository compares it only with other ModTimes of the same storage,
	// so the clocks of the hosts using it need not agree. Backends set it
	// in Stat and List.
	//
	// GC dates tombstones by the ModTime of the index file holding them and
	// relies on every operation that began later having seen that file. So
	// ModTime should not be earlier than the moment the object became
	// visible to List and Stat: blob/local stamps a file after its rename.
	// Storage that dates an object by the start of its upload (S3 dates a
	// multipart upload by its initiation) is handled by the repository: it
	// saves a file with new tombstones twice, and the second date is not
	// earlier than the first save's visibility.
	ModTime time.Time
}

// Backend stores the objects of one repository. Implementations must be safe
// for concurrent use by multiple goroutines.
//
// Errors: an operation on an object that does not exist returns an error for
// which errors.Is(err, fs.ErrNotExist) is true. Every other error means the
// storage could not be reached or failed; the repository reports it and does
// not retry (a backend that talks to a network retries inside itself).
type Backend interface {
	// Location describes the backend for messages, e.g. the directory.
	Location() string

	// Save stores the object h with the content of rd and sets its ModTime
	// to the storage's present time. It is atomic and durable: when Save returns nil, the complete object is on stable
	// storage under its name; when it fails or the process crashes, the
	// object either does not exist or is complete (never partial). Saving
	// over an existing object replaces it atomically.
	Save(ctx context.Context, h Handle, rd io.Reader) error

	// Load calls fn with a reader of length bytes of h starting at offset
	// (length 0 means up to the end). The reader is valid only during fn;
	// fn's error is returned. A reader may deliver fewer bytes if the object
	// is shorter: callers use io.ReadFull and treat io.ErrUnexpectedEOF as
	// damage.
	Load(ctx context.Context, h Handle, length int, offset int64, fn func(rd io.Reader) error) error

	// Stat returns the size of h.
	Stat(ctx context.Context, h Handle) (FileInfo, error)

	// Remove deletes h. Removing an object that does not exist returns an
	// error matching fs.ErrNotExist.
	Remove(ctx context.Context, h Handle) error

	// List calls fn for every object of type t, in no particular order.
	// Objects being saved concurrently may or may not be listed. fn's error
	// stops the listing and is returned.
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error

	// Close releases resources; the backend must not be used afterwards.
	Close() error
}

// FileSaver is implemented by backends on a local filesystem that can take
// over a finished temporary file without copying it. The repository writes
// pack files (tens of MiB, filled by several goroutines with WriteAt) through
// it when available, and through Save otherwise.
type FileSaver interface {
	// TempFile creates an empty temporary file on the backend's filesystem.
	TempFile(ctx context.Context) (*os.File, error)

	// SaveFile makes the temporary file f the object h with the same
	// guarantees as Save: it syncs f, closes it, renames it and syncs the
	// directory. f is closed in every case and removed on error.
	SaveFile(ctx context.Context, h Handle, f *os.File) error

	// RemoveTemp closes and removes a temporary file that will not be saved.
	RemoveTemp(f *os.File) error
}

// AnonymousTemp returns a new file in the system's temporary directory
// that has no name: data staged there by a process that is killed leaves
// nothing behind (the kernel frees the file with its last descriptor).
// Use it through the returned descriptor only; closing it frees it.
func AnonymousTemp(pattern string) (*os.File, error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
