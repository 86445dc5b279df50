package local

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csbs/csbs/internal/compute"
)

// KeptDirName is the hidden directory, next to the volume images, that
// holds the kept clone of each volume: the reflink clone read by the
// volume's last committed backup, kept so that the next backup reads only
// what changed since (see changedExtents). Each volume has at most one
// kept clone, <KeptDirName>/<volume id>.img, described by <volume id>.json.
// They are csbs's, never user data: removing them only makes the next
// backup of the volume read it whole.
const KeptDirName = ".csbs-kept"

// tokenPrefix starts every snapshot token of the local driver.
const tokenPrefix = "reflink-clones:"

// keptRecord describes a kept clone, written when its backup commits. The
// clone is trusted for a comparison only while its inode, size, mtime and
// ctime are still these (nobody wrote it) and the volume is still the
// same file (SourceDev, SourceIno).
type keptRecord struct {
	Token     string    `json:"token"` // the Snapshot.Token of its backup
	BackupID  string    `json:"backup_id"`
	ServerID  string    `json:"server_id,omitempty"` // absent in records of csbs before it
	VolumeID  string    `json:"volume_id"`
	KeptAt    time.Time `json:"kept_at,omitzero"`
	Source    string    `json:"source"` // the volume's image, symlinks resolved
	SourceDev uint64    `json:"source_dev"`
	SourceIno uint64    `json:"source_ino"`
	Ino       uint64    `json:"ino"`
	Size      int64     `json:"size"`
	MtimeNs   int64     `json:"mtime_ns"`
	CtimeNs   int64     `json:"ctime_ns"`
}

// plainID is a volume id usable as a file name as it is.
var plainID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// keptPaths are the kept clone and its record of volume volID whose image
// is at real (symlinks resolved).
func keptPaths(real, volID string) (img, rec string) {
	name := volID
	if !plainID.MatchString(volID) {
		name = "x" + hex.EncodeToString([]byte(volID))
		if len(name) > 200 {
			name = name[:200]
		}
	}
	dir := filepath.Join(filepath.Dir(real), KeptDirName)
	return filepath.Join(dir, name+".img"), filepath.Join(dir, name+".json")
}

// newToken names the snapshot of backup backupID: unique per run, so that a
// re-run of a backup never matches its earlier run's clone.
func newToken(backupID string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return tokenPrefix + backupID + ":" + hex.EncodeToString(b)
}

func readRecord(p string) (keptRecord, error) {
	var r keptRecord
	data, err := os.ReadFile(p)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("%s: %w", p, err)
	}
	return r, nil
}

func statOf(f *os.File) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(int(f.Fd()), &st)
	return st, err
}

// clonedVolume is what a snapshot knows of one cloned volume to compare it
// with its kept clone and to keep its own clone on commit.
type clonedVolume struct {
	server    string // the server's id
	vol       compute.Volume
	real      string // the image, symlinks resolved
	clone     string // the new clone's path
	srcDev    uint64
	srcIno    uint64
	cloneFile *os.File // open for reading
	size      int64
}

// compare finds the changes of cv since the parent backup through its kept
// clone. Every case where that would be unsafe is a full read with the
// reason why.
func compare(cv clonedVolume, parent *compute.Parent) compute.Changes {
	if parent == nil {
		return compute.NoChanges("no earlier backup to compare with")
	}
	img, recPath := keptPaths(cv.real, cv.vol.ID)
	rec, err := readRecord(recPath)
	if errors.Is(err, fs.ErrNotExist) {
		return compute.NoChanges("no kept clone of this disk (the first backup with clones kept, or it was removed)")
	}
	if err != nil {
		return compute.NoChanges("the kept clone's record is unreadable: " + err.Error())
	}
	if rec.Token != parent.Token || rec.VolumeID != cv.vol.ID {
		return compute.NoChanges(fmt.Sprintf("the kept clone is of backup %s, not of the earlier backup %s", rec.BackupID, parent.BackupID))
	}
	if rec.Source != cv.real || rec.SourceDev != cv.srcDev || rec.SourceIno != cv.srcIno {
		return compute.NoChanges("the disk is another file (path, file system or inode) than the one the kept clone was made of")
	}
	kf, err := os.Open(img)
	if err != nil {
		return compute.NoChanges("the kept clone cannot be opened: " + err.Error())
	}
	defer kf.Close()
	st, err := statOf(kf)
	if err != nil {
		return compute.NoChanges("the kept clone cannot be examined: " + err.Error())
	}
	if st.Ino != rec.Ino || st.Size != rec.Size || st.Mtim.Nano() != rec.MtimeNs || st.Ctim.Nano() != rec.CtimeNs {
		return compute.NoChanges("the kept clone was modified or replaced since it was kept")
	}
	if uint64(st.Dev) != cv.srcDev {
		return compute.NoChanges("the kept clone is on another file system than the disk")
	}
	if rec.Size != cv.size {
		return compute.NoChanges(fmt.Sprintf("the disk's size changed from %d to %d bytes", rec.Size, cv.size))
	}
	old, err := cloneExtents(kf, rec.Size)
	if err != nil {
		return compute.NoChanges("the kept clone's extents cannot be read: " + err.Error())
	}
	cur, err := cloneExtents(cv.cloneFile, cv.size)
	if err != nil {
		return compute.NoChanges("the new clone's extents cannot be read: " + err.Error())
	}
	ext, err := changedExtents(old, cur, cv.size)
	if err != nil {
		return compute.NoChanges(err.Error())
	}
	return compute.Changes{Known: true, Extents: ext,
		Reason: "extent comparison with the kept reflink clone of backup " + rec.BackupID}
}

// testHookFiemap, when set, runs before each FIEMAP of a clone; an error it
// returns stands for the ioctl's. Tests use it for the fallbacks on a
// failed FIEMAP: no file system at hand fails the ioctl on demand.
var testHookFiemap func(f *os.File) error

// cloneExtents is fiemap of a clone (kept or new), through testHookFiemap.
func cloneExtents(f *os.File, size int64) ([]physExtent, error) {
	if testHookFiemap != nil {
		if err := testHookFiemap(f); err != nil {
			return nil, err
		}
	}
	return fiemap(f, size)
}

// keep makes cv's clone the kept clone of its volume, replacing the one
// before, and records it under token. A crash between the steps leaves a
// record that does not match the clone: the next backup reads all.
func keep(cv clonedVolume, token, backupID string) error {
	img, recPath := keptPaths(cv.real, cv.vol.ID)
	if err := os.Mkdir(filepath.Dir(img), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := os.Rename(cv.clone, img); err != nil {
		return err
	}
	st, err := statOf(cv.cloneFile)
	if err != nil {
		return err
	}
	rec := keptRecord{Token: token, BackupID: backupID, ServerID: cv.server, VolumeID: cv.vol.ID,
		KeptAt: time.Now().UTC(), Source: cv.real,
		SourceDev: cv.srcDev, SourceIno: cv.srcIno, Ino: st.Ino, Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	tmp := recPath + ".tmp"
	if err := writeSynced(tmp, data); err != nil {
		return err
	}
	if err := os.Rename(tmp, recPath); err != nil {
		return err
	}
	return syncDir(filepath.Dir(img))
}

func writeSynced(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

var _ compute.Keeper = (*Driver)(nil)

// KeptClones lists the kept clones next to the current inventory's volumes
// and in every kept-clone directory written down or seen before
// (compute.Keeper), from their records and sizes.
func (d *Driver) KeptClones(ctx context.Context) ([]compute.KeptClone, error) {
	var out []compute.KeptClone
	for _, dir := range d.keptDirs() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".img") {
				continue
			}
			if k, ok := describeKept(filepath.Join(dir, e.Name())); ok {
				out = append(out, k)
			}
		}
	}
	slices.SortFunc(out, func(a, b compute.KeptClone) int {
		return cmp.Or(cmp.Compare(a.ServerID, b.ServerID), cmp.Compare(a.VolumeID, b.VolumeID), cmp.Compare(a.Path, b.Path))
	})
	return out, nil
}

// describeKept describes the kept clone at img from its record and its
// size; ok is false when it is gone. A clone without a readable record is
// listed with what its file tells.
func describeKept(img string) (compute.KeptClone, bool) {
	k := compute.KeptClone{Path: img}
	fi, err := os.Stat(img)
	if err != nil {
		return k, false // removed meanwhile
	}
	k.ApparentBytes, k.KeptAt = fi.Size(), fi.ModTime().UTC()
	if rec, err := readRecord(strings.TrimSuffix(img, ".img") + ".json"); err == nil {
		k.ServerID, k.VolumeID, k.BackupID, k.Source = rec.ServerID, rec.VolumeID, rec.BackupID, rec.Source
		if !rec.KeptAt.IsZero() {
			k.KeptAt = rec.KeptAt
		}
	}
	return k, true
}

// MeasureKept sets k.ExclusiveBytes to what the clone's extents without
// the shared flag hold (compute.Keeper). A clone whose extents cannot be
// read counts as wholly exclusive; one that is gone holds nothing.
func (d *Driver) MeasureKept(ctx context.Context, k *compute.KeptClone) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.ExclusiveBytes = 0
	f, err := os.Open(k.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("measure kept clone: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("measure kept clone: %w", err)
	}
	ext, err := cloneExtents(f, fi.Size())
	if err != nil {
		k.ExclusiveBytes = fi.Size()
		return nil
	}
	for _, x := range ext {
		if x.Flags&extentShared == 0 {
			k.ExclusiveBytes += min(x.end(), fi.Size()) - x.Logical
		}
	}
	return nil
}

// DropKept removes the kept clone at k.Path and its record
// (compute.Keeper). It refuses a path that is not a kept clone.
func (d *Driver) DropKept(ctx context.Context, k compute.KeptClone) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(k.Path)
	if !filepath.IsAbs(k.Path) || filepath.Base(dir) != KeptDirName || !strings.HasSuffix(k.Path, ".img") {
		return fmt.Errorf("%s is not a kept clone (want %s/<volume>.img)", k.Path, KeptDirName)
	}
	var errs []error
	for _, p := range []string{strings.TrimSuffix(k.Path, ".img") + ".json", k.Path} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("drop kept clone: %w", err))
		}
	}
	os.Remove(dir) // only when empty
	return errors.Join(errs...)
}

// keptDirs lists the kept-clone directories next to the current
// inventory's volumes and those of earlier inventories this process saw.
func (d *Driver) keptDirs() []string {
	for _, s := range d.current() {
		for _, v := range s.Volumes {
			if real, err := filepath.EvalSymlinks(v.Path); err == nil {
				d.sawKeptDir(real)
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.seenDirs))
	for p := range d.seenDirs {
		out = append(out, p)
	}
	return out
}

// sawKeptDir remembers the kept-clone directory of the image at real.
func (d *Driver) sawKeptDir(real string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seenDirs == nil {
		d.seenDirs = map[string]bool{}
	}
	d.seenDirs[filepath.Join(filepath.Dir(real), KeptDirName)] = true
}

// removeOrphanClones removes the kept clones that can never serve again:
// of a volume no longer in the inventory, whose image moved or was
// replaced by another file, or without a matching record (a crash while
// keeping), and leftover temporary records. Files younger than staleAge
// are left alone: a backup may be keeping them right now.
func (d *Driver) removeOrphanClones(now time.Time) (int, error) {
	want := map[string]compute.Volume{} // record path -> volume
	reals := map[string]string{}        // record path -> image
	for _, s := range d.current() {
		for _, v := range s.Volumes {
			real, err := filepath.EvalSymlinks(v.Path)
			if err != nil {
				continue
			}
			_, rec := keptPaths(real, v.ID)
			want[rec], reals[rec] = v, real
		}
	}
	removed := 0
	var errs []error
	remove := func(p string) {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove kept clone: %w", err))
		}
	}
	for _, dir := range d.keptDirs() {
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			d.forgetKeptDir(dir, now)
			continue
		}
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			fi, err := e.Info()
			if err != nil || now.Sub(fi.ModTime()) < staleAge {
				continue
			}
			switch {
			case strings.HasSuffix(p, ".img"):
				rec := strings.TrimSuffix(p, ".img") + ".json"
				if !valid(rec, want, reals) {
					remove(rec)
					remove(p)
					removed++
				}
			case strings.HasSuffix(p, ".json"):
				if _, err := os.Stat(strings.TrimSuffix(p, ".json") + ".img"); errors.Is(err, fs.ErrNotExist) {
					remove(p)
				}
			case strings.HasSuffix(p, ".tmp"):
				remove(p)
			}
		}
		os.Remove(dir) // only when empty
	}
	return removed, errors.Join(errs...)
}

// valid reports whether the kept clone described at recPath belongs to a
// volume of the inventory that is still the file it was made of.
func valid(recPath string, want map[string]compute.Volume, reals map[string]string) bool {
	v, ok := want[recPath]
	if !ok {
		return false
	}
	rec, err := readRecord(recPath)
	if err != nil || rec.VolumeID != v.ID || rec.Source != reals[recPath] {
		return false
	}
	var st unix.Stat_t
	if err := unix.Stat(rec.Source, &st); err != nil {
		return false
	}
	img := strings.TrimSuffix(recPath, ".json") + ".img"
	var ist unix.Stat_t
	if err := unix.Stat(img, &ist); err != nil {
		return false
	}
	return uint64(st.Dev) == rec.SourceDev && st.Ino == rec.SourceIno && ist.Ino == rec.Ino
}
