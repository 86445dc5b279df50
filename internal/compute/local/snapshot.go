package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/compute"
)

// SnapshotDirName is the hidden directory, next to the volume images, that
// holds reflink clones while a snapshot lives:
// <dir of the image>/.csbs-snapshots/<random>/.
const SnapshotDirName = ".csbs-snapshots"

// lockName is the file in each snapshot directory that its owner holds an
// exclusive flock on until Release. The kernel drops the lock when the owner
// dies, which is how RemoveStaleSnapshots tells leftovers from live snapshots.
const lockName = "lock"

// staleAge is how old an unlocked snapshot directory must be before
// RemoveStaleSnapshots removes it: a directory is briefly unlocked while its
// owner creates it.
const staleAge = time.Minute

// Snapshot takes a point-in-time copy of all volumes of s. When every
// volume is a regular file on a filesystem with reflink support, each is
// cloned (FICLONE) into a hidden directory next to it: Method "reflink",
// CrashConsistent true. Otherwise (a block device, no reflink support, no
// room or permission for the clone directory) it returns a live view of the
// volumes: Method "live", CrashConsistent false.
//
// The clones are taken back to back after all files are opened, so the
// window between the first and last clone is short, but they are not one
// atomic operation across volumes.
//
// A volume that does not exist or cannot be opened fails the snapshot with a
// *compute.VolumeError.
//
// The readers give the image files' bytes as they are (raw images). The
// changes of a cloned volume are found by comparing its clone with the
// kept clone of req.Parent (see compare); a reflink snapshot taken with
// clones kept has a Token, and its Commit keeps its clones for the next
// backup. A live view's changes are unknown.
func (d *Driver) Snapshot(ctx context.Context, s compute.Server, req compute.SnapshotRequest) (*compute.Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	srcs := make([]*os.File, 0, len(s.Volumes))
	defer func() {
		for _, f := range srcs {
			f.Close()
		}
	}()
	vols := make([]compute.SnapshotVolume, len(s.Volumes))
	regular := len(s.Volumes) > 0
	for i, v := range s.Volumes {
		f, err := os.Open(v.Path)
		if err != nil {
			return nil, volumeError(v, err)
		}
		srcs = append(srcs, f)
		fi, err := f.Stat()
		if err != nil {
			return nil, volumeError(v, err)
		}
		size, err := fileSize(f, fi)
		if err != nil {
			return nil, volumeError(v, err)
		}
		regular = regular && fi.Mode().IsRegular()
		v.Size = size
		vols[i] = compute.SnapshotVolume{Volume: v, Path: v.Path, Size: size}
	}

	if regular {
		snap, cloned, err := reflink(ctx, vols, srcs)
		if err == nil {
			for i := range cloned {
				cloned[i].server = s.ID
			}
			d.trackChanges(snap, cloned, req)
			// Each clone is instant, but the clones of several disks are
			// taken one after another. Only a stopped server, or one with
			// a single disk, is then frozen at one instant; never report
			// more consistency than that.
			if len(vols) > 1 && s.Status != "SHUTOFF" {
				snap.CrashConsistent = false
				snap.Method = "reflink-per-disk"
			}
			return snap, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		level := slog.LevelWarn
		if unsupported(err) {
			level = slog.LevelDebug
		}
		d.log.Log(ctx, level, "compute/local: no reflink snapshot, reading volumes live (not crash-consistent)",
			"server", s.ID, "err", err)
	}
	// The live view reads the volumes through the files opened above.
	for i := range vols {
		_ = unix.Fadvise(int(srcs[i].Fd()), 0, 0, unix.FADV_SEQUENTIAL) // larger readahead; advice only
		vols[i].Reader = &fileReader{f: srcs[i], size: vols[i].Size}
	}
	open := srcs
	srcs = nil
	return compute.NewSnapshot(false, "live", vols, func() error { closeAll(open); return nil }), nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// unsupported reports whether err means the filesystem cannot clone, as
// opposed to a problem worth an operator's attention.
func unsupported(err error) bool {
	return errorsIsAny(err, unix.EOPNOTSUPP, unix.ENOTSUP, unix.EXDEV, unix.EINVAL, unix.ENOTTY, unix.ENOSYS)
}

func volumeError(v compute.Volume, err error) error {
	return &compute.VolumeError{VolumeID: v.ID, Name: v.Name, Path: v.Path, Err: err}
}

// snapDir is one snapshot directory, locked by its owner.
type snapDir struct {
	path string
	lock *os.File
}

// trackChanges sets the changes of each cloned volume of snap, and, when
// clones are kept, the snapshot's token and what its Commit keeps.
func (d *Driver) trackChanges(snap *compute.Snapshot, cloned []clonedVolume, req compute.SnapshotRequest) {
	for i, cv := range cloned {
		ch := compute.NoChanges("compute.local.keep_clones is off: no clone of the earlier backup to compare with")
		if d.keepClones {
			ch = compare(cv, req.Parent)
		}
		snap.Volumes[i].Reader.(*fileReader).changes = &ch
	}
	if !d.keepClones || req.BackupID == "" {
		return
	}
	token := newToken(req.BackupID)
	snap.Token = token
	snap.SetCommit(func() error {
		var errs []error
		for _, cv := range cloned {
			d.sawKeptDir(cv.real)
			if err := d.noteKeptDir(filepath.Join(filepath.Dir(cv.real), KeptDirName)); err != nil {
				errs = append(errs, volumeError(cv.vol, fmt.Errorf("write down the kept-clone directory (a restart would not find it): %w", err)))
				continue
			}
			if err := keep(cv, token, req.BackupID); err != nil {
				errs = append(errs, volumeError(cv.vol, fmt.Errorf("keep the clone for the next backup: %w", err)))
			}
		}
		return errors.Join(errs...)
	})
}

// reflink clones srcs into snapshot directories next to them and returns the
// snapshot and what each clone is, or an error after removing every clone
// it made.
func reflink(ctx context.Context, vols []compute.SnapshotVolume, srcs []*os.File) (_ *compute.Snapshot, _ []clonedVolume, err error) {
	var (
		dirs   []*snapDir
		byDir  = make(map[string]*snapDir)
		clones []string
		dsts   []*os.File
		reads  []*os.File
	)
	release := func() error {
		var errs []error
		for _, f := range reads {
			// What is left of the clones in the page cache (read-ahead):
			// a kept clone is never read again, a removed one is gone.
			_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		}
		closeAll(reads)
		reads = nil
		for _, f := range dsts {
			f.Close()
		}
		dsts = nil
		for _, c := range clones {
			if err := os.Remove(c); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove snapshot clone: %w", err))
			}
		}
		for _, sd := range dirs {
			errs = append(errs, sd.remove())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			release()
		}
	}()

	// Create all clone targets first so the clones themselves follow each
	// other as closely as possible.
	cloned := make([]clonedVolume, len(vols))
	for i, v := range vols {
		// Clone next to the file itself, not next to a symlink to it: only
		// the same filesystem can share extents.
		real, err := filepath.EvalSymlinks(v.Path)
		if err != nil {
			return nil, nil, err
		}
		dir := filepath.Dir(real)
		sd := byDir[dir]
		if sd == nil {
			if sd, err = newSnapDir(dir); err != nil {
				return nil, nil, err
			}
			byDir[dir] = sd
			dirs = append(dirs, sd)
		}
		p := filepath.Join(sd.path, strconv.Itoa(i)+"-"+filepath.Base(real))
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, nil, err
		}
		clones = append(clones, p)
		dsts = append(dsts, f)
		st, err := statOf(srcs[i])
		if err != nil {
			return nil, nil, err
		}
		cloned[i] = clonedVolume{vol: v.Volume, real: real, clone: p, srcDev: uint64(st.Dev), srcIno: st.Ino}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	for i, dst := range dsts {
		if err := unix.IoctlFileClone(int(dst.Fd()), int(srcs[i].Fd())); err != nil {
			return nil, nil, fmt.Errorf("clone %s: %w", vols[i].Volume.Path, err)
		}
	}
	out := make([]compute.SnapshotVolume, len(vols))
	for i, dst := range dsts {
		fi, err := dst.Stat()
		if err != nil {
			return nil, nil, err
		}
		if err := dst.Sync(); err != nil {
			return nil, nil, err
		}
		out[i] = vols[i]
		out[i].Path = clones[i]
		out[i].Size = fi.Size()
		out[i].Volume.Size = fi.Size()
	}
	for _, f := range dsts {
		if err := f.Close(); err != nil {
			return nil, nil, err
		}
	}
	dsts = nil
	for _, sd := range dirs {
		if err := syncDir(sd.path); err != nil {
			return nil, nil, err
		}
	}
	for i := range out {
		f, err := os.Open(out[i].Path)
		if err != nil {
			return nil, nil, err
		}
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL) // larger readahead; advice only
		reads = append(reads, f)
		fr := &fileReader{f: f, size: out[i].Size, uncache: true}
		// The clone's pages are in no cache (a new inode), and FICLONE
		// wrote the source's dirty pages first: direct reads see what the
		// clone holds and cost no page cache. Where they are refused, the
		// reads go through the cache.
		if df, err := os.OpenFile(out[i].Path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
			reads = append(reads, df)
			fr.direct = df
		}
		out[i].Reader = fr
		cloned[i].cloneFile, cloned[i].size = f, out[i].Size
	}
	return compute.NewSnapshot(true, "reflink", out, release), cloned, nil
}

// newSnapDir creates and locks a fresh snapshot directory under
// dir/.csbs-snapshots.
func newSnapDir(dir string) (*snapDir, error) {
	base := filepath.Join(dir, SnapshotDirName)
	if err := os.Mkdir(base, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	p, err := os.MkdirTemp(base, "snap-")
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(p, lockName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != nil {
			lock.Close()
		}
	}
	if err != nil {
		os.RemoveAll(p)
		return nil, err
	}
	return &snapDir{path: p, lock: lock}, nil
}

// remove deletes the snapshot directory (whatever is left in it), drops its
// lock, and removes .csbs-snapshots too when nothing else is in it.
func (sd *snapDir) remove() error {
	err := os.RemoveAll(sd.path)
	if sd.lock != nil {
		sd.lock.Close()
		sd.lock = nil
	}
	os.Remove(filepath.Dir(sd.path)) // fails while other snapshots live: fine
	if err != nil {
		return fmt.Errorf("remove snapshot directory: %w", err)
	}
	return nil
}

// RemoveStaleSnapshots removes snapshot directories left behind by a process
// that died before releasing its snapshots, next to every volume of the
// current inventory, and kept clones that can no longer serve (their
// volume left the inventory or is another file now; see
// removeOrphanClones). A directory whose owner is alive (in this or another
// process) is kept: its lock is held. Run it at start-up and now and then;
// leftovers cost disk space as the originals diverge from the clones.
func (d *Driver) RemoveStaleSnapshots(ctx context.Context) (removed int, err error) {
	seen := make(map[string]bool)
	var errs []error
	n, err := d.removeOrphanClones(time.Now())
	removed += n
	if err != nil {
		errs = append(errs, err)
	}
	for _, s := range d.current() {
		for _, v := range s.Volumes {
			if err := ctx.Err(); err != nil {
				return removed, err
			}
			real, err := filepath.EvalSymlinks(v.Path)
			if err != nil {
				continue // a missing volume has no snapshots to clean up
			}
			base := filepath.Join(filepath.Dir(real), SnapshotDirName)
			if seen[base] {
				continue
			}
			seen[base] = true
			n, err := removeStale(base, time.Now())
			removed += n
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return removed, errors.Join(errs...)
}

// removeStale removes the unlocked snapshot directories in base older than
// staleAge.
func removeStale(base string, now time.Time) (int, error) {
	ents, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	removed := 0
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(base, e.Name())
		fi, err := e.Info()
		if err != nil || now.Sub(fi.ModTime()) < staleAge {
			continue
		}
		lock, err := os.Open(filepath.Join(p, lockName))
		if err == nil {
			err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err != nil {
				lock.Close()
				continue // alive (or unlockable): keep it
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove stale snapshot: %w", err))
		} else {
			removed++
		}
		if lock != nil {
			lock.Close()
		}
	}
	os.Remove(base) // only succeeds when empty
	return removed, errors.Join(errs...)
}

// errorsIsAny reports whether err is any of targets.
func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
