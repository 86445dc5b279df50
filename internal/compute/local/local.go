// Package local is the compute driver for servers listed in an inventory
// file (YAML, see Inventory): virtual machines of this host whose disks are
// image files or block devices. The file is re-read when it changes.
//
// Snapshots are reflink clones (FICLONE) where the filesystem supports them
// (XFS with reflink=1, Btrfs) and live views of the volumes otherwise. The
// clone read by each volume's last committed backup is kept (KeptDirName)
// and compared with the next backup's clone by their extent maps (FIEMAP):
// blocks both still share are unchanged, so an incremental reads only what
// was written since. Anything that makes the comparison unsafe is a full
// read with the reason why (see compare).
package local

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/csbs/csbs/internal/compute"
)

// Driver is the local compute driver. It is safe for concurrent use.
type Driver struct {
	path string
	log  *slog.Logger
	// keepClones keeps each volume's clone of its last committed backup
	// for the next backup's extent comparison (kept.go).
	keepClones bool

	mu      sync.Mutex
	servers []compute.Server // the last good inventory; never modified in place
	tried   fileID           // the last file version read, good or not
	err     error            // why the file version tried was not loaded; nil if it was
	// seenDirs are the kept-clone directories of every inventory seen
	// and those written down in stateDir, so that clones of volumes since
	// removed are found and removed.
	seenDirs map[string]bool
	// stateDir is where the kept-clone directories are written down
	// (keptdirs.go); "" keeps them in memory only.
	stateDir string
}

var _ compute.Driver = (*Driver)(nil)

// Option configures a Driver.
type Option func(*Driver)

// WithLogger sets where the driver reports inventory reload failures and
// snapshot fallbacks. The default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(d *Driver) {
		if l != nil {
			d.log = l
		}
	}
}

// WithKeepClones sets whether the clone read by each volume's last
// committed backup is kept so that the next backup reads only the extents
// that changed since (default true). Off, every backup reads every
// allocated byte and no clone outlives its backup.
func WithKeepClones(keep bool) Option {
	return func(d *Driver) { d.keepClones = keep }
}

// fileID identifies a version of the inventory file cheaply: an atomic
// rewrite changes the inode, an in-place one the size or mtime.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

// New reads the inventory at inventoryPath. It fails when the file cannot be
// read or is invalid; later changes to the file are picked up by every call,
// and a broken rewrite keeps the last good inventory (see Err).
func New(inventoryPath string, opts ...Option) (*Driver, error) {
	abs, err := filepath.Abs(inventoryPath)
	if err != nil {
		return nil, fmt.Errorf("inventory %s: %w", inventoryPath, err)
	}
	d := &Driver{path: abs, log: slog.Default(), keepClones: true}
	for _, o := range opts {
		o(d)
	}
	servers, id, err := d.read()
	if err != nil {
		return nil, err
	}
	d.servers, d.tried = servers, id
	if err := d.loadKeptDirs(); err != nil {
		return nil, fmt.Errorf("kept-clone directories written down in %s: %w", d.stateDir, err)
	}
	// Clones kept before their directories were written down: note the
	// ones next to the inventory's volumes now.
	for _, dir := range d.keptDirs() {
		if _, err := os.Stat(dir); err == nil {
			if err := d.noteKeptDir(dir); err != nil {
				d.log.Warn("compute/local: cannot write down a kept-clone directory; a restart may not find its clones", "dir", dir, "err", err)
			}
		}
	}
	return d, nil
}

// Path is the absolute path of the inventory file.
func (d *Driver) Path() string { return d.path }

// Err reports why the current inventory file is not in use (it is missing,
// unreadable or invalid) while the driver keeps serving the last good one.
// It is nil when the file in place was loaded.
func (d *Driver) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refreshLocked()
	return d.err
}

// read reads and validates the inventory file and tells which version of
// the file it read.
func (d *Driver) read() ([]compute.Server, fileID, error) {
	f, err := os.Open(d.path)
	if err != nil {
		return nil, fileID{}, fmt.Errorf("inventory: %w", err)
	}
	defer f.Close()
	// Stat the open file before reading it: a write that races with the read
	// changes the mtime after this, so the next call reads again.
	fi, err := f.Stat()
	if err != nil {
		return nil, fileID{}, fmt.Errorf("inventory: %w", err)
	}
	id := idOf(fi)
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, id, fmt.Errorf("inventory %s: %w", d.path, err)
	}
	servers, err := ParseInventory(data, filepath.Dir(d.path))
	if err != nil {
		return nil, id, fmt.Errorf("inventory %s: %w", d.path, err)
	}
	return servers, id, nil
}

func idOf(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id
}

// refreshLocked re-reads the inventory when the file changed since it was
// last read. A bad version is read once and reported once, not on every call.
func (d *Driver) refreshLocked() {
	fi, err := os.Stat(d.path)
	if err != nil {
		err = fmt.Errorf("inventory: %w (serving the last good inventory)", err)
		if d.err == nil || d.err.Error() != err.Error() {
			d.log.Error("compute/local: inventory unavailable", "err", err)
		}
		d.err, d.tried = err, fileID{}
		return
	}
	if idOf(fi) == d.tried {
		return
	}
	servers, id, err := d.read()
	d.tried = id
	if err != nil {
		d.err = fmt.Errorf("%w (serving the last good inventory)", err)
		d.log.Error("compute/local: inventory not reloaded", "err", err)
		return
	}
	d.servers, d.err = servers, nil
	d.log.Info("compute/local: inventory reloaded", "path", d.path, "servers", len(servers))
}

// current returns the current inventory, re-read if the file changed.
// The slice is shared: callers copy what they hand out.
func (d *Driver) current() []compute.Server {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refreshLocked()
	return d.servers
}

// Server returns the server id of project projectID, with the current size
// of each volume. projectID "" matches any project. A server of another
// project is compute.ErrNotFound.
func (d *Driver) Server(ctx context.Context, projectID, id string) (compute.Server, error) {
	if err := ctx.Err(); err != nil {
		return compute.Server{}, err
	}
	for _, s := range d.current() {
		if s.ID == id && (projectID == "" || s.ProjectID == projectID) {
			return withSizes(s), nil
		}
	}
	return compute.Server{}, fmt.Errorf("server %s: %w", id, compute.ErrNotFound)
}

// Servers lists the servers of project projectID (all when it is ""), in
// inventory order, with the current size of each volume.
func (d *Driver) Servers(ctx context.Context, projectID string) ([]compute.Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []compute.Server
	for _, s := range d.current() {
		if projectID == "" || s.ProjectID == projectID {
			out = append(out, withSizes(s))
		}
	}
	return out, nil
}

// withSizes returns a deep copy of s with each volume's size measured now.
func withSizes(s compute.Server) compute.Server {
	s.StopCommand = clone(s.StopCommand)
	s.StartCommand = clone(s.StartCommand)
	vols := make([]compute.Volume, len(s.Volumes))
	for i, v := range s.Volumes {
		v.Size, _ = pathSize(v.Path)
		vols[i] = v
	}
	s.Volumes = vols
	return s
}

// pathSize is the size of a regular file or block device at p.
func pathSize(p string) (int64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return fileSize(f, fi)
}

// fileSize is the size of an open regular file or block device; fi is its
// stat. A block device reports size 0 in stat, so seek to its end instead.
func fileSize(f *os.File, fi os.FileInfo) (int64, error) {
	switch m := fi.Mode(); {
	case m.IsRegular():
		return fi.Size(), nil
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		return f.Seek(0, io.SeekEnd)
	default:
		return 0, fmt.Errorf("%s is neither a regular file nor a block device (%s)", f.Name(), m.Type())
	}
}

// maxOutput bounds how much of a failed command's output goes into its error.
const maxOutput = 400

// RunCommand runs argv without a shell and waits for it; ctx cancellation
// kills it. A failure includes the tail of its combined output. Only argv[0]
// is named in errors: arguments may hold secrets.
func (d *Driver) RunCommand(ctx context.Context, argv []string) error {
	if len(argv) == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// A grandchild that keeps the output pipe open must not block us forever
	// once the command itself has exited or been killed.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = fmt.Errorf("%w (%v)", ctxErr, err)
	}
	msg := strings.TrimSpace(string(out))
	if len(msg) > maxOutput {
		msg = "…" + strings.ToValidUTF8(msg[len(msg)-maxOutput:], "")
	}
	if msg == "" {
		return fmt.Errorf("command %s: %w", argv[0], err)
	}
	return fmt.Errorf("command %s: %w: %s", argv[0], err, msg)
}
