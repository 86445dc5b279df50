package libvirt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirtxml"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/nbd"
)

// CheckpointPrefix starts the name of every checkpoint csbs makes: the
// checkpoint of backup B is named CheckpointPrefix+B. Checkpoints with
// other names are never touched.
const CheckpointPrefix = "csbs-"

// CheckpointName is the name of the checkpoint made by backup backupID.
func CheckpointName(backupID string) string { return CheckpointPrefix + backupID }

// Snapshot captures the domain of s. A running domain is read through one
// libvirt pull-mode backup job (all disks at one instant, crash-consistent;
// quiesced when the guest agent froze the file systems) that also creates
// the checkpoint of this backup; a shut-off domain through qemu-nbd. See
// the package doc for what the changed extents promise.
func (d *Driver) Snapshot(ctx context.Context, cs compute.Server, req compute.SnapshotRequest) (*compute.Snapshot, error) {
	unlock := d.lock(cs.ID)
	s, err := d.server(ctx, "", cs.ID)
	if err != nil {
		unlock()
		return nil, err
	}
	var snap *compute.Snapshot
	switch s.state {
	case golibvirt.DomainRunning, golibvirt.DomainBlocked:
		snap, err = d.backupRunning(ctx, s, req, unlock)
	case golibvirt.DomainShutoff:
		snap, err = d.readShutOff(ctx, s, unlock)
	default:
		err = fmt.Errorf("domain %s is %s: only running and shut-off domains can be backed up", s.Name, s.Status)
	}
	if err != nil {
		unlock()
		return nil, err
	}
	return snap, nil
}

// plan is what a backup job does with one disk.
type plan struct {
	disk
	incremental string // parent checkpoint, or "" for a full read
	reason      string // why (for Changes.Reason)
}

// backupRunning runs a pull-mode backup job of a running domain.
func (d *Driver) backupRunning(ctx context.Context, s server, req compute.SnapshotRequest, unlock func()) (_ *compute.Snapshot, err error) {
	l, err := d.conn()
	if err != nil {
		return nil, err
	}
	if err := d.endStaleJob(l, s); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(d.cfg.ScratchDir, "backup-")
	if err != nil {
		return nil, fmt.Errorf("scratch directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var conns []*nbd.Conn
	jobStarted := false
	cleanup := func() {
		for _, c := range conns {
			c.Close()
		}
		defer lock.Close()
		if jobStarted {
			if err := endJob(l, s.dom); err != nil {
				d.log.Warn("compute/libvirt: end backup job", "domain", s.Name, "err", err)
			}
		}
		os.RemoveAll(dir)
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()

	parent, parentDisks, why := d.parentCheckpoint(l, s, req)
	name := CheckpointName(req.BackupID)
	// A re-run of the same backup replaces its checkpoint. Deleting merges
	// its bitmap into its parent's, so no change is forgotten.
	if cp, err := l.DomainCheckpointLookupByName(s.dom, name, 0); err == nil {
		if err := l.DomainCheckpointDelete(cp, 0); err != nil {
			return nil, fmt.Errorf("libvirt: delete the checkpoint %s of an earlier run of this backup: %w", name, err)
		}
	}
	plans := make([]plan, len(s.disks))
	bitmaps := false
	for i, k := range s.disks {
		plans[i] = plan{disk: k, reason: why}
		switch {
		case !k.bitmaps():
			plans[i].reason = k.format + " disk: it cannot hold a dirty bitmap, every backup reads it whole"
		case parent != "" && parentDisks[k.target]:
			plans[i].incremental = parent
			plans[i].reason = "dirty bitmap since checkpoint " + parent
		case parent != "":
			plans[i].reason = "checkpoint " + parent + " has no bitmap of this disk"
		}
		bitmaps = bitmaps || k.bitmaps()
	}
	sock := filepath.Join(dir, "nbd.sock")
	quiesced := d.freeze(l, s)
	err = l.DomainBackupBegin(s.dom, backupXML(sock, dir, plans), checkpointXML(name, plans, bitmaps), 0)
	if err != nil && anyIncremental(plans) {
		// An inconsistent or missing bitmap (the image was replaced, QEMU
		// crashed): never trust it, read everything instead.
		d.log.Warn("compute/libvirt: incremental backup refused; reading every disk whole", "domain", s.Name, "checkpoint", parent, "err", err)
		for i := range plans {
			if plans[i].incremental != "" {
				plans[i].incremental = ""
				plans[i].reason = "libvirt refused an incremental backup from checkpoint " + parent + ": " + err.Error()
			}
		}
		err = l.DomainBackupBegin(s.dom, backupXML(sock, dir, plans), checkpointXML(name, plans, bitmaps), 0)
	}
	if quiesced {
		d.thaw(l, s)
	}
	if err != nil {
		return nil, fmt.Errorf("libvirt: start the backup job of domain %s: %w", s.Name, err)
	}
	jobStarted = true
	exports, err := d.exports(l, s)
	if err != nil {
		return nil, err
	}
	vols := make([]compute.SnapshotVolume, len(plans))
	for i, p := range plans {
		ex, ok := exports[p.target]
		if !ok {
			return nil, &compute.VolumeError{VolumeID: p.vol.ID, Name: p.vol.Name, Path: p.file, Err: errors.New("the backup job exports no such disk")}
		}
		contexts := []string{"base:allocation"}
		bitmap := ""
		if p.incremental != "" {
			if ex.ExportBitmap == "" {
				return nil, &compute.VolumeError{VolumeID: p.vol.ID, Name: p.vol.Name, Path: p.file, Err: errors.New("the incremental backup job exports no dirty bitmap")}
			}
			bitmap = "qemu:dirty-bitmap:" + ex.ExportBitmap
			contexts = append(contexts, bitmap)
		}
		c, err := nbd.Dial(ctx, "unix", sock, ex.ExportName, contexts...)
		if err != nil {
			return nil, &compute.VolumeError{VolumeID: p.vol.ID, Name: p.vol.Name, Path: p.file, Err: err}
		}
		conns = append(conns, c)
		if bitmap != "" && !c.HasContext(bitmap) {
			return nil, &compute.VolumeError{VolumeID: p.vol.ID, Name: p.vol.Name, Path: p.file, Err: fmt.Errorf("QEMU does not offer %s", bitmap)}
		}
		// More connections for the reads: a backup keeps several in
		// flight, and one connection serves one at a time. Fewer if QEMU
		// takes fewer; one is enough to go on.
		var more []*nbd.Conn
		for range readConns - 1 {
			rc, err := nbd.Dial(ctx, "unix", sock, ex.ExportName)
			if err != nil {
				d.log.Debug("compute/libvirt: one more NBD connection refused; reading over fewer", "domain", s.Name, "disk", p.target, "err", err)
				break
			}
			conns = append(conns, rc)
			more = append(more, rc)
		}
		v := p.vol
		v.Size = c.Size()
		vols[i] = compute.SnapshotVolume{Volume: v, Path: p.file, Size: c.Size(),
			Reader: newReader(c, more, bitmap, p.reason)}
	}
	token := ""
	if bitmaps {
		token = name
	}
	snap := compute.NewSnapshot(true, "libvirt-backup", vols, func() error {
		cleanup()
		if token != "" {
			d.dropCheckpoints(l, s, name, parent)
		}
		unlock()
		return nil
	})
	snap.Quiesced = quiesced
	snap.Token = token
	return snap, nil
}

// lockName is the file in a backup job's scratch directory that its owner
// holds an exclusive flock on while the job lives. The kernel drops the lock
// when the owner dies, which is how endStaleJob tells a dead owner's job.
const lockName = "lock"

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("scratch directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("scratch directory: lock: %w", err)
	}
	return f, nil
}

// endStaleJob ends a backup job of the domain that a csbs process left
// behind (it died, or libvirtd was down when it tried to end the job): its
// socket is in this driver's scratch directory and nobody holds the lock of
// that directory. A job of a live owner, or not csbs's, is left alone and
// the backup fails at once (libvirt would make it wait for the job lock).
func (d *Driver) endStaleJob(l *golibvirt.Libvirt, s server) error {
	doc, err := l.DomainBackupGetXMLDesc(s.dom, 0)
	if err != nil {
		return nil // no backup job
	}
	busy := fmt.Errorf("domain %s: another backup job is running (not csbs's, or of a csbs process still alive); try again when it has ended", s.Name)
	var x libvirtxml.DomainBackup
	if err := x.Unmarshal(doc); err != nil || x.Pull == nil || x.Pull.Server == nil || x.Pull.Server.UNIX == nil {
		return busy
	}
	dir := filepath.Dir(x.Pull.Server.UNIX.Socket)
	if filepath.Dir(dir) != filepath.Clean(d.cfg.ScratchDir) {
		return busy
	}
	if f, err := os.Open(filepath.Join(dir, lockName)); err == nil {
		defer f.Close()
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			return busy // its owner is alive
		}
	}
	d.log.Warn("compute/libvirt: ending a backup job left behind by an earlier run", "domain", s.Name, "socket", x.Pull.Server.UNIX.Socket)
	if err := endJob(l, s.dom); err != nil {
		return fmt.Errorf("domain %s: end the backup job an earlier run left behind: %w", s.Name, err)
	}
	os.RemoveAll(dir)
	return nil
}

// endJob ends the domain's backup job and waits until libvirt no longer
// shows it, so that its scratch images are released before they are
// removed and before another job starts (QEMU 7.2 can abort when its block
// nodes are queried while a job's nodes are being torn down).
func endJob(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
	if err := l.DomainAbortJob(dom); err != nil {
		if _, gerr := l.DomainBackupGetXMLDesc(dom, 0); gerr != nil {
			return nil // already gone
		}
		return err
	}
	for range 300 {
		if _, err := l.DomainBackupGetXMLDesc(dom, 0); err != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("the backup job is still there 6s after it was ended")
}

// parentCheckpoint finds the checkpoint of the parent backup and the disks
// it has bitmaps of; "" and why not when there is none to trust.
func (d *Driver) parentCheckpoint(l *golibvirt.Libvirt, s server, req compute.SnapshotRequest) (string, map[string]bool, string) {
	if req.Parent == nil {
		return "", nil, "no earlier backup to compare with"
	}
	want := CheckpointName(req.Parent.BackupID)
	if req.Parent.Token != want {
		return "", nil, "the earlier backup " + req.Parent.BackupID + " kept no checkpoint"
	}
	cp, err := l.DomainCheckpointLookupByName(s.dom, want, 0)
	if err != nil {
		return "", nil, "checkpoint " + want + " is gone (deleted, the domain redefined, or a restore since)"
	}
	doc, err := l.DomainCheckpointGetXMLDesc(cp, 0)
	if err != nil {
		return "", nil, "checkpoint " + want + " unreadable: " + err.Error()
	}
	var x libvirtxml.DomainCheckpoint
	if err := x.Unmarshal(doc); err != nil {
		return "", nil, "checkpoint " + want + " unreadable: " + err.Error()
	}
	disks := map[string]bool{}
	if x.Disks != nil {
		for _, k := range x.Disks.Disks {
			disks[k.Name] = k.Checkpoint == "bitmap"
		}
	}
	return want, disks, ""
}

func anyIncremental(ps []plan) bool {
	for _, p := range ps {
		if p.incremental != "" {
			return true
		}
	}
	return false
}

// backupXML is the pull-mode backup definition: an NBD server on a unix
// socket, every disk exported, scratch images in dir.
func backupXML(sock, dir string, plans []plan) string {
	var b strings.Builder
	b.WriteString("<domainbackup mode='pull'>")
	b.WriteString("<server transport='unix' socket='" + xmlAttr(sock) + "'/><disks>")
	for _, p := range plans {
		mode := "full"
		inc := ""
		if p.incremental != "" {
			mode, inc = "incremental", " incremental='"+xmlAttr(p.incremental)+"'"
		}
		fmt.Fprintf(&b, "<disk name='%s' backup='yes' type='file' backupmode='%s'%s><scratch file='%s'/></disk>",
			xmlAttr(p.target), mode, inc, xmlAttr(filepath.Join(dir, p.target+".scratch.qcow2")))
	}
	b.WriteString("</disks></domainbackup>")
	return b.String()
}

// checkpointXML is the checkpoint the backup job creates: a bitmap on every
// disk that can hold one. No checkpoint when none can.
func checkpointXML(name string, plans []plan, bitmaps bool) golibvirt.OptString {
	if !bitmaps {
		return nil
	}
	var b strings.Builder
	b.WriteString("<domaincheckpoint><name>" + xmlAttr(name) + "</name><disks>")
	for _, p := range plans {
		mode := "no"
		if p.bitmaps() {
			mode = "bitmap"
		}
		fmt.Fprintf(&b, "<disk name='%s' checkpoint='%s'/>", xmlAttr(p.target), mode)
	}
	b.WriteString("</disks></domaincheckpoint>")
	return golibvirt.OptString{b.String()}
}

func xmlAttr(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "'", "&apos;", `"`, "&quot;")
	return r.Replace(s)
}

// exports reads the running backup job's export names per disk.
func (d *Driver) exports(l *golibvirt.Libvirt, s server) (map[string]libvirtxml.DomainBackupPullDisk, error) {
	doc, err := l.DomainBackupGetXMLDesc(s.dom, 0)
	if err != nil {
		return nil, fmt.Errorf("libvirt: backup job of domain %s: %w", s.Name, err)
	}
	var x libvirtxml.DomainBackup
	if err := x.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("libvirt: backup job of domain %s: %w", s.Name, err)
	}
	out := map[string]libvirtxml.DomainBackupPullDisk{}
	if x.Pull != nil && x.Pull.Disks != nil {
		for _, k := range x.Pull.Disks.Disks {
			if k.ExportName == "" {
				k.ExportName = k.Name
			}
			out[k.Name] = k
		}
	}
	return out, nil
}

// freeze asks the guest agent to freeze the guest's file systems; false
// when there is no agent or it does not answer (the backup is then
// crash-consistent only).
func (d *Driver) freeze(l *golibvirt.Libvirt, s server) bool {
	n, err := l.DomainFsfreeze(s.dom, nil, 0)
	if err != nil {
		d.log.Debug("compute/libvirt: no file system freeze (no guest agent?)", "domain", s.Name, "err", err)
		return false
	}
	return n > 0
}

func (d *Driver) thaw(l *golibvirt.Libvirt, s server) {
	if _, err := l.DomainFsthaw(s.dom, nil, 0); err != nil {
		d.log.Error("compute/libvirt: thaw the guest's file systems", "domain", s.Name, "err", err)
	}
}

// dropCheckpoints deletes csbs's checkpoints of the domain other than keep
// (this backup's) and parent (the one it was compared with: the next
// backup may still need it if this one is not committed). Deleting a
// checkpoint merges its bitmap into its parent, so no change is lost.
func (d *Driver) dropCheckpoints(l *golibvirt.Libvirt, s server, keep, parent string) {
	cps, _, err := l.DomainListAllCheckpoints(s.dom, 1, 0)
	if err != nil {
		d.log.Warn("compute/libvirt: list checkpoints", "domain", s.Name, "err", err)
		return
	}
	for _, cp := range cps {
		if !strings.HasPrefix(cp.Name, CheckpointPrefix) || cp.Name == keep || cp.Name == parent {
			continue
		}
		if err := l.DomainCheckpointDelete(cp, 0); err != nil {
			d.log.Warn("compute/libvirt: delete an old checkpoint", "domain", s.Name, "checkpoint", cp.Name, "err", err)
		}
	}
}

// readConns is how many NBD connections a backup reads each disk over:
// as many as the repository keeps reads in flight.
const readConns = 4

// reader is a snapshot volume read over NBD.
type reader struct {
	c      *nbd.Conn      // block status (its metadata contexts)
	pool   chan *nbd.Conn // the connections reads take turns on, c among them
	bitmap string         // dirty bitmap context; "" when changes are unknown
	reason string
}

// newReader reads over c and the connections more to the same export;
// block status asks c.
func newReader(c *nbd.Conn, more []*nbd.Conn, bitmap, reason string) *reader {
	pool := make(chan *nbd.Conn, 1+len(more))
	pool <- c
	for _, m := range more {
		pool <- m
	}
	return &reader{c: c, pool: pool, bitmap: bitmap, reason: reason}
}

// ReadAt reads over a free connection of the pool (several reads may be in
// flight: each connection serves one at a time).
func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	c := <-r.pool
	defer func() { r.pool <- c }()
	return c.ReadAt(p, off)
}

// Allocated is every extent that base:allocation does not report as
// reading zeros.
func (r *reader) Allocated(ctx context.Context) ([]compute.Extent, error) {
	ext, err := r.c.BlockStatus(ctx, "base:allocation", 0, r.c.Size())
	if err != nil {
		return nil, err
	}
	var out []compute.Extent
	for _, e := range ext {
		if e.Flags&nbd.StateZero == 0 {
			out = compute.AppendExtent(out, compute.Extent{Off: e.Off, Len: e.Len})
		}
	}
	return out, nil
}

// Changed is the dirty bitmap's extents when the job is incremental.
func (r *reader) Changed(ctx context.Context) (compute.Changes, error) {
	if r.bitmap == "" {
		return compute.NoChanges(r.reason), nil
	}
	ext, err := r.c.BlockStatus(ctx, r.bitmap, 0, r.c.Size())
	if err != nil {
		return compute.Changes{}, err
	}
	ch := compute.Changes{Known: true, Reason: r.reason}
	for _, e := range ext {
		if e.Flags&nbd.Dirty != 0 {
			ch.Extents = compute.AppendExtent(ch.Extents, compute.Extent{Off: e.Off, Len: e.Len})
		}
	}
	return ch, nil
}
