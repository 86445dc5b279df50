package local

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The kept-clone directories are next to the images, wherever those are.
// A directory whose volumes all left the inventory is named by no
// inventory any more, so each directory the driver keeps a clone in is
// also written down in its state directory (WithStateDir): one small file
// per directory, named by a hash of its path and holding the path. A
// restarted process reads them and finds the clones of volumes removed
// from the inventory while it was down (removeOrphanClones).

// WithStateDir sets where the driver writes down the directories it keeps
// clones in, so that a restarted process still finds the clones of volumes
// removed from the inventory meanwhile (csbs serve: data_dir/kept-clones).
// Without it they are known only to the process that kept them.
func WithStateDir(dir string) Option {
	return func(d *Driver) { d.stateDir = dir }
}

// dirEntry is the state file naming the kept-clone directory dir.
func (d *Driver) dirEntry(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return filepath.Join(d.stateDir, hex.EncodeToString(h[:16]))
}

// noteKeptDir writes down the kept-clone directory dir (see WithStateDir)
// unless it already is. An error means a restart may not find it.
func (d *Driver) noteKeptDir(dir string) error {
	if d.stateDir == "" {
		return nil
	}
	p := d.dirEntry(dir)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(d.stateDir, 0o700); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := writeSynced(tmp, []byte(dir+"\n")); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	return syncDir(d.stateDir)
}

// loadKeptDirs adds the kept-clone directories written down in the state
// directory to those the driver looks in.
func (d *Driver) loadKeptDirs() error {
	if d.stateDir == "" {
		return nil
	}
	ents, err := os.ReadDir(d.stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seenDirs == nil {
		d.seenDirs = map[string]bool{}
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(d.stateDir, e.Name()))
		if err != nil {
			continue
		}
		if dir := strings.TrimSpace(string(data)); filepath.IsAbs(dir) && filepath.Base(dir) == KeptDirName {
			d.seenDirs[dir] = true
		}
	}
	return nil
}

// forgetKeptDir stops looking in the kept-clone directory dir, which is
// gone: its entry goes once older than staleAge (a backup may be about to
// create the directory it has just written down).
func (d *Driver) forgetKeptDir(dir string, now time.Time) {
	if d.stateDir != "" {
		p := d.dirEntry(dir)
		if fi, err := os.Stat(p); err == nil && now.Sub(fi.ModTime()) < staleAge {
			return
		}
		os.Remove(p)
	}
	d.mu.Lock()
	delete(d.seenDirs, dir)
	d.mu.Unlock()
}
