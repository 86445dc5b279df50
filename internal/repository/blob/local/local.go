// Package local stores repository objects as files in a directory:
//
//	config
//	keys/<id>
//	data/<first 2 hex digits of id>/<id>
//	index/<id>
//	snapshots/<id>
//	leases/<id>
//	tmp/              files being written; renamed into place when complete
//
// Objects are written to tmp/, synced, renamed into place and the directory
// is synced, so a crash leaves either the complete object or nothing (plus,
// possibly, a stale file in tmp/). A saved file's modification time is set
// after the rename, so it is never earlier than the moment the file became
// visible (the repository dates tombstones by it: blob.FileInfo.ModTime).
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/repository/blob"
)

// testHookBeforeRename, when set by a test, runs between a saved file's sync
// and its rename (a slow disk).
var testHookBeforeRename func()

// testHookAfterRename, when set by a test, runs between a saved file's
// rename and its time stamp, with the file's path.
var testHookAfterRename func(path string)

// Local is a blob.Backend and blob.FileSaver on a local directory.
type Local struct {
	dir string
}

var (
	_ blob.Backend   = (*Local)(nil)
	_ blob.FileSaver = (*Local)(nil)
)

var subdirs = map[blob.FileType]string{
	blob.KeyFile:      "keys",
	blob.PackFile:     "data",
	blob.IndexFile:    "index",
	blob.SnapshotFile: "snapshots",
	blob.LeaseFile:    "leases",
	// Damage kept out of the way: records of chunk copies no process uses,
	// and packs GC could not read (kept for inspection and repair).
	blob.QuarantineFile: "quarantine",
	blob.DamagedFile:    "damaged",
}

const tmpDir = "tmp"

// Create makes the directory layout of a new repository in dir (which may
// exist and be empty) and returns the backend. It does not write config.
func Create(dir string) (*Local, error) {
	for _, sub := range []string{"keys", "data", "index", "snapshots", "leases", "quarantine", "damaged", tmpDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("create repository directory: %w", err)
		}
	}
	return &Local{dir: dir}, nil
}

// Open returns the backend for an existing directory; it fails if dir is not
// a directory.
func Open(dir string) (*Local, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open repository: %s is not a directory", dir)
	}
	// Repositories made before leases (or quarantine) existed lack their
	// directories.
	for _, sub := range []string{tmpDir, "leases", "quarantine", "damaged"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
	}
	return &Local{dir: dir}, nil
}

// Location returns the directory.
func (l *Local) Location() string { return l.dir }

// Path returns the file name of h.
func (l *Local) Path(h blob.Handle) string {
	switch h.Type {
	case blob.ConfigFile:
		return filepath.Join(l.dir, "config")
	case blob.PackFile:
		return filepath.Join(l.dir, "data", h.Name[:2], h.Name)
	}
	return filepath.Join(l.dir, subdirs[h.Type], h.Name)
}

func (l *Local) check(h blob.Handle) error {
	if !h.Valid() {
		return fmt.Errorf("invalid object name %q for type %v", h.Name, h.Type)
	}
	return nil
}

// Save writes rd to a temporary file and renames it to h (see blob.Backend).
func (l *Local) Save(ctx context.Context, h blob.Handle, rd io.Reader) error {
	if err := l.check(h); err != nil {
		return err
	}
	f, err := l.TempFile(ctx)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rd); err != nil {
		_ = l.RemoveTemp(f)
		return fmt.Errorf("save %v: %w", h, err)
	}
	return l.SaveFile(ctx, h, f)
}

// TempFile creates a file in tmp/.
func (l *Local) TempFile(ctx context.Context) (*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Join(l.dir, tmpDir), "tmp-")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	return f, nil
}

// RemoveTemp closes and removes a temporary file.
func (l *Local) RemoveTemp(f *os.File) error {
	_ = f.Close()
	return os.Remove(f.Name())
}

// SaveFile syncs, closes and renames f to h, then syncs h's directory.
func (l *Local) SaveFile(ctx context.Context, h blob.Handle, f *os.File) (err error) {
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := l.check(h); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save %v: sync: %w", h, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	dst := l.Path(h)
	if testHookBeforeRename != nil {
		testHookBeforeRename()
	}
	err = os.Rename(f.Name(), dst)
	if errors.Is(err, fs.ErrNotExist) {
		// data/<xx>/ is created on first use.
		if err = os.MkdirAll(filepath.Dir(dst), 0o700); err == nil {
			if err = syncDir(filepath.Dir(filepath.Dir(dst))); err == nil {
				err = os.Rename(f.Name(), dst)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	if testHookAfterRename != nil {
		testHookAfterRename(dst)
	}
	// The file got its modification time when it was written, before the
	// sync and the rename, which may take long on a busy disk; a reader
	// that lists the directory meanwhile does not see it. Stamp it now
	// (UTIME_NOW: the file system's clock, also on NFS), so its ModTime is
	// not earlier than the moment it became visible. A file removed
	// meanwhile (another process deleted the snapshot it had just listed)
	// was saved: its time no longer matters.
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}, 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("save %v: set modification time: %w", h, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("save %v: sync directory: %w", h, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Load opens h and calls fn with a reader of the requested range.
func (l *Local) Load(ctx context.Context, h blob.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := l.check(h); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(l.Path(h))
	if err != nil {
		return err
	}
	defer f.Close()
	var rd io.Reader
	if length > 0 {
		rd = io.NewSectionReader(f, offset, int64(length))
	} else {
		if offset > 0 {
			if _, err := f.Seek(offset, io.SeekStart); err != nil {
				return err
			}
		}
		rd = f
	}
	return fn(rd)
}

// Stat returns the size of h.
func (l *Local) Stat(ctx context.Context, h blob.Handle) (blob.FileInfo, error) {
	if err := l.check(h); err != nil {
		return blob.FileInfo{}, err
	}
	fi, err := os.Stat(l.Path(h))
	if err != nil {
		return blob.FileInfo{}, err
	}
	return blob.FileInfo{Name: h.Name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Remove deletes h.
func (l *Local) Remove(ctx context.Context, h blob.Handle) error {
	if err := l.check(h); err != nil {
		return err
	}
	p := l.Path(h)
	if err := os.Remove(p); err != nil {
		return err
	}
	// The removal is durable when Remove returns, like a Save: a deleted
	// snapshot must not come back after a crash once GC has removed the
	// packs it referenced.
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("remove %v: sync directory: %w", h, err)
	}
	return nil
}

// List calls fn for every object of type t. Names that are not valid object
// names (editor backups, stray files) are skipped.
func (l *Local) List(ctx context.Context, t blob.FileType, fn func(blob.FileInfo) error) error {
	if t == blob.ConfigFile {
		fi, err := os.Stat(l.Path(blob.Handle{Type: t}))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(blob.FileInfo{Name: "config", Size: fi.Size(), ModTime: fi.ModTime()})
	}
	sub, ok := subdirs[t]
	if !ok {
		return fmt.Errorf("list: unknown type %v", t)
	}
	dirs := []string{filepath.Join(l.dir, sub)}
	if t == blob.PackFile {
		ents, err := os.ReadDir(dirs[0])
		if err != nil {
			return err
		}
		dirs = dirs[:0]
		for _, e := range ents {
			if e.IsDir() && len(e.Name()) == 2 {
				dirs = append(dirs, filepath.Join(l.dir, sub, e.Name()))
			}
		}
	}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			h := blob.Handle{Type: t, Name: e.Name()}
			if !e.Type().IsRegular() || !h.Valid() || (t == blob.PackFile && !strings.HasPrefix(e.Name(), filepath.Base(d))) {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed while listing
			}
			if err != nil {
				return err
			}
			if err := fn(blob.FileInfo{Name: e.Name(), Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// RemoveStaleTemp removes temporary files not modified for olderThan (left
// by a crash) and returns the bytes freed.
func (l *Local) RemoveStaleTemp(ctx context.Context, olderThan time.Duration) (int64, error) {
	ents, err := os.ReadDir(filepath.Join(l.dir, tmpDir))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var freed int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || time.Since(fi.ModTime()) < olderThan {
			continue
		}
		if err := os.Remove(filepath.Join(l.dir, tmpDir, e.Name())); err == nil {
			freed += fi.Size()
		}
	}
	return freed, nil
}

// TempBytes returns the bytes held by temporary files.
func (l *Local) TempBytes(ctx context.Context) (int64, error) {
	ents, err := os.ReadDir(filepath.Join(l.dir, tmpDir))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n, nil
}

// Close does nothing; it exists for blob.Backend.
func (l *Local) Close() error { return nil }
