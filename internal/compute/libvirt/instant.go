package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/csbs/csbs/internal/nbd"
)

// Instant recovery starts a shut-off domain from a backup at once and
// moves the backup's bytes onto its disks while it runs:
//
//  1. every disk of the backup is served read-only over NBD on a unix
//     socket in a fresh scratch directory, and a qcow2 overlay is made
//     whose backing file is that export;
//  2. the domain is started transiently (virDomainCreateXML) from its
//     persistent definition with those disks' sources replaced by the
//     overlays: the guest reads the backup and writes into the overlays,
//     while the persistent definition keeps naming the real disks;
//  3. each disk is copied (virDomainBlockCopy: the whole chain, overlay and
//     backup, in the disk's own format onto the existing real disk) while
//     the guest runs; a copy mirrors the guest's writes once it is in sync;
//  4. when every copy is in sync the disks are switched over (pivot): the
//     guest now runs on its real disks, and the exports and overlays are
//     removed.
//
// Until the switch the real disks hold a mix of old bytes and the backup's,
// so an interruption (Ctrl-C, a failure, the guest powering off) ends the
// transient run and says which disks need a restore; the persistent
// definition is never changed.

// InstantRecovery is a request to start a domain from a backup.
type InstantRecovery struct {
	// Disks are the backup's disks by volume id (VolumeID of the domain and
	// the disk's target). Each must be a disk of the domain with the same
	// guest-visible size; the domain's other disks keep their sources.
	Disks map[string]nbd.Disk
	// Stop shuts a running domain down first (an ACPI request, then
	// destroy after Config.ShutdownTimeout); without it a domain that is
	// not shut off is refused.
	Stop bool
	// Bandwidth limits each disk's copy, in bytes per second; 0: as fast
	// as the disks go.
	Bandwidth uint64
	// Progress, when set, is told of each step: once with InstantRunning,
	// then about every PollInterval with InstantCopying, once with
	// InstantReady before the switch and once with InstantDone. It runs
	// on the recovery's goroutine: the recovery waits for it.
	Progress func(InstantProgress)
	// PollInterval is how often the copies are looked at; default 1s.
	PollInterval time.Duration
}

// InstantPhase is a step of an instant recovery.
type InstantPhase int

const (
	// InstantRunning: the domain runs from the backup (its disks are the
	// overlays); no copy has begun.
	InstantRunning InstantPhase = iota
	// InstantCopying: the disks are being copied onto the real disks.
	InstantCopying
	// InstantReady: every copy is in sync; the switch comes next.
	InstantReady
	// InstantDone: the domain runs on its real disks; the exports and the
	// overlays are gone.
	InstantDone
)

// InstantProgress reports an instant recovery's state.
type InstantProgress struct {
	Phase  InstantPhase
	Domain string // the domain's name
	Dir    string // the scratch directory of the sockets and overlays
	Disks  []InstantDisk
}

// InstantDisk is one disk of an instant recovery.
type InstantDisk struct {
	Target   string // vda
	VolumeID string
	File     string // the real disk, which the copy writes
	Overlay  string // the overlay the guest runs on until the switch
	Socket   string // the NBD export of the backup's disk
	// Done and Total are the copy's progress in libvirt's units (bytes,
	// roughly); Done == Total > 0 once the copy is in sync.
	Done, Total uint64
}

// instant is one running recovery.
type instant struct {
	d     *Driver
	l     *golibvirt.Libvirt
	s     server
	req   InstantRecovery
	dir   string
	disks []InstantDisk
	fmts  map[string]string // target → the real disk's format
	block map[string]bool   // target → the real disk is a block device

	stopServe context.CancelFunc
	serving   sync.WaitGroup
	started   bool            // the transient domain was created
	copying   map[string]bool // targets whose copy was started and not switched over
	switched  []string        // targets switched over to the real disk
}

// InstantRecover starts the shut-off domain with UUID id from the backup's
// disks in req.Disks, copies them onto its disks while it runs, and
// switches the running domain over to them. It returns when the domain
// runs on its own disks (nil), or with an error that says what state the
// disks and the domain are in. Everything is checked before anything
// changes: a refusal leaves the domain as it was.
func (d *Driver) InstantRecover(ctx context.Context, id string, req InstantRecovery) (err error) {
	unlock := d.lock(id)
	defer unlock()
	if req.PollInterval <= 0 {
		req.PollInterval = time.Second
	}
	s, err := d.server(ctx, "", id)
	if err != nil {
		return err
	}
	l, err := d.conn()
	if err != nil {
		return err
	}
	in := &instant{d: d, l: l, s: s, req: req, fmts: map[string]string{}, block: map[string]bool{}, copying: map[string]bool{}}
	if err := in.check(ctx); err != nil {
		return fmt.Errorf("instant recovery of domain %s refused (nothing was changed): %w", s.Name, err)
	}
	nothing := "nothing was written"
	if err := d.dropAllCheckpoints(l, s); err != nil {
		return fmt.Errorf("domain %s (%s): %w", s.Name, nothing, err)
	}
	if s.state != golibvirt.DomainShutoff {
		if err := d.shutdown(ctx, l, s); err != nil {
			return fmt.Errorf("stop domain %s (%s): %w", s.Name, nothing, err)
		}
		nothing = "it was shut off for this; nothing was written"
		if err := d.dropAllCheckpoints(l, s); err != nil { // made in between
			return fmt.Errorf("domain %s (%s): %w", s.Name, nothing, err)
		}
	}
	// The bytes the copy writes are not seen by any dirty bitmap: the next
	// backup must read every disk whole, as after a restore.
	if err := d.removeBitmaps(ctx, s); err != nil {
		return fmt.Errorf("domain %s (%s): %w", s.Name, nothing, err)
	}
	defer func() {
		if err != nil {
			err = in.abandon(err)
		}
	}()
	if err := in.serve(ctx); err != nil {
		return err
	}
	if err := in.start(); err != nil {
		return err
	}
	in.report(InstantRunning)
	if err := in.copy(ctx); err != nil {
		return err
	}
	if err := in.wait(ctx); err != nil {
		return err
	}
	in.report(InstantReady)
	if err := in.pivot(); err != nil {
		return err
	}
	in.cleanup()
	in.report(InstantDone)
	return nil
}

// check refuses what instant recovery cannot do, before anything changes.
func (in *instant) check(ctx context.Context) error {
	s := in.s
	if len(in.req.Disks) == 0 {
		return errors.New("the backup has no disk")
	}
	persistent, err := in.l.DomainIsPersistent(s.dom)
	if err != nil {
		return fmt.Errorf("libvirt: %w", err)
	}
	if persistent != 1 {
		return errors.New("the domain is transient: its disks would have no definition to return to; define it (virsh define) first")
	}
	switch {
	case s.state == golibvirt.DomainShutoff:
	case in.req.Stop:
	default:
		return fmt.Errorf("the domain is %s: instant recovery replaces its disks; shut it off first, or let csbs stop it (--stop)", s.Status)
	}
	var have []string
	for _, k := range s.disks {
		have = append(have, k.target+" ("+k.vol.ID+")")
	}
	for id := range in.req.Disks {
		if _, err := s.findDisk(id); err != nil {
			return fmt.Errorf("the backup's disk %s is not a disk of the domain (its disks: %s): restore the backup instead", id, strings.Join(have, ", "))
		}
	}
	for _, k := range s.disks { // in the domain's order
		id := k.vol.ID
		if in.req.Disks[id] == nil {
			continue
		}
		want := in.req.Disks[id].Size()
		if k.vol.Size != want {
			return fmt.Errorf("disk %s (%s) is %d bytes, the backup's %d: the copy goes onto the disk as it is; resize it to %d bytes or restore instead",
				k.target, k.file, k.vol.Size, want, want)
		}
		if k.vol.Shareable {
			return fmt.Errorf("disk %s (%s) is shareable: another domain may use it while it is overwritten; restore it instead", k.target, k.file)
		}
		if k.format != "raw" && k.format != "qcow2" {
			return fmt.Errorf("disk %s (%s) is %s: instant recovery copies onto raw and qcow2 disks; restore instead", k.target, k.file, k.format)
		}
		if k.format == "qcow2" {
			backing, err := backingFile(ctx, k.file)
			if err != nil {
				return err
			}
			if backing != "" {
				return fmt.Errorf("disk %s (%s) has a backing file (%s): the copy would not cover what the backing file holds; restore instead", k.target, k.file, backing)
			}
		}
		fi, err := os.Stat(k.file)
		if err != nil {
			return fmt.Errorf("disk %s: %w", k.target, err)
		}
		in.fmts[k.target] = k.format
		in.block[k.target] = fi.Mode()&os.ModeDevice != 0
		in.disks = append(in.disks, InstantDisk{Target: k.target, VolumeID: id, File: k.file})
	}
	return nil
}

// backingFile returns the backing file a qcow2 image names, "" for none.
func backingFile(ctx context.Context, file string) (string, error) {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "-U", "--output=json", file).Output()
	if err != nil {
		return "", fmt.Errorf("qemu-img info %s: %w", file, err)
	}
	var info struct {
		Backing string `json:"backing-filename"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("qemu-img info %s: %w", file, err)
	}
	return info.Backing, nil
}

// serve exports each disk of the backup on a unix socket and makes its
// overlay.
func (in *instant) serve(ctx context.Context) error {
	dir, err := os.MkdirTemp(in.d.cfg.ScratchDir, "instant-")
	if err != nil {
		return fmt.Errorf("scratch directory: %w", err)
	}
	in.dir = dir
	// The exports outlive ctx: a cancelled recovery still needs them
	// until the transient domain is gone.
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	in.stopServe = stop
	for i := range in.disks {
		k := &in.disks[i]
		k.Socket = filepath.Join(dir, k.Target+".sock")
		k.Overlay = filepath.Join(dir, k.Target+".qcow2")
		ln, err := net.Listen("unix", k.Socket)
		if err != nil {
			return fmt.Errorf("export disk %s: %w", k.Target, err)
		}
		srv := &nbd.Server{Disk: in.req.Disks[k.VolumeID], Name: k.Target, Log: in.d.log}
		in.serving.Go(func() {
			if err := srv.Serve(sctx, ln); err != nil {
				in.d.log.Warn("compute/libvirt: instant recovery export ended", "disk", k.Target, "err", err)
			}
		})
		size := in.req.Disks[k.VolumeID].Size()
		out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
			"-b", nbdURI(k.Socket), k.Overlay, fmt.Sprint(size)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("overlay of disk %s: qemu-img create: %w: %s", k.Target, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// nbdURI is how QEMU names the export on socket.
func nbdURI(socket string) string { return "nbd+unix:///?socket=" + socket }

// start creates the transient domain from the persistent definition, each
// recovered disk's source replaced by its overlay over the export.
func (in *instant) start() error {
	// Secure: the definition keeps its secrets (a VNC password) for the
	// transient run; it is never logged.
	doc, err := in.l.DomainGetXMLDesc(in.s.dom, golibvirt.DomainXMLInactive|golibvirt.DomainXMLSecure)
	if err != nil {
		return fmt.Errorf("libvirt: domain %s XML: %w", in.s.Name, err)
	}
	live, err := overlayXML(doc, in.disks)
	if err != nil {
		return err
	}
	if _, err := in.l.DomainCreateXML(live, golibvirt.DomainNone); err != nil {
		return fmt.Errorf("libvirt: start domain %s from the backup: %w", in.s.Name, err)
	}
	in.started = true
	return nil
}

// overlayXML returns the domain definition doc with the source of each
// disk of disks replaced by its overlay, whose backing file is the NBD
// export.
func overlayXML(doc string, disks []InstantDisk) (string, error) {
	var x libvirtxml.Domain
	if err := x.Unmarshal(doc); err != nil {
		return "", fmt.Errorf("domain XML: %w", err)
	}
	by := map[string]InstantDisk{}
	for _, k := range disks {
		by[k.Target] = k
	}
	n := 0
	if x.Devices != nil {
		for i := range x.Devices.Disks {
			dd := &x.Devices.Disks[i]
			if dd.Target == nil {
				continue
			}
			k, ok := by[dd.Target.Dev]
			if !ok || (dd.Device != "" && dd.Device != "disk") {
				continue
			}
			if dd.Driver == nil {
				dd.Driver = &libvirtxml.DomainDiskDriver{Name: "qemu"}
			}
			dd.Driver.Type = "qcow2"
			dd.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: k.Overlay}}
			dd.BackingStore = &libvirtxml.DomainDiskBackingStore{
				Format: &libvirtxml.DomainDiskFormat{Type: "raw"},
				Source: &libvirtxml.DomainDiskSource{Network: &libvirtxml.DomainDiskSourceNetwork{
					Protocol: "nbd",
					Hosts:    []libvirtxml.DomainDiskSourceHost{{Transport: "unix", Socket: k.Socket}},
				}},
			}
			n++
		}
	}
	if n != len(disks) {
		return "", fmt.Errorf("domain XML: found %d of the %d disks to recover", n, len(disks))
	}
	return x.Marshal()
}

// copy starts the copy of every disk onto its real disk: the whole chain
// (not shallow), in the disk's own format, onto the existing image
// (REUSE_EXT); a transient job, as the domain stays persistent.
func (in *instant) copy(ctx context.Context) error {
	var params []golibvirt.TypedParam
	if in.req.Bandwidth > 0 {
		params = append(params, golibvirt.TypedParam{Field: golibvirt.DomainBlockCopyBandwidth,
			Value: *golibvirt.NewTypedParamValueUllong(in.req.Bandwidth)})
	}
	for _, k := range in.disks {
		if err := ctx.Err(); err != nil {
			return err
		}
		dest := libvirtxml.DomainDisk{
			Driver: &libvirtxml.DomainDiskDriver{Type: in.fmts[k.Target]},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: k.File}},
		}
		if in.block[k.Target] {
			dest.Source = &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: k.File}}
		}
		doc, err := dest.Marshal()
		if err != nil {
			return err
		}
		// Marked before the call: a call that fails half-way may have
		// begun writing.
		in.copying[k.Target] = true
		if err := in.l.DomainBlockCopy(in.s.dom, k.Target, doc, params,
			golibvirt.DomainBlockCopyReuseExt|golibvirt.DomainBlockCopyTransientJob); err != nil {
			return fmt.Errorf("libvirt: copy disk %s onto %s: %w", k.Target, k.File, err)
		}
	}
	return nil
}

// wait polls the copies until every one is in sync, reporting progress.
func (in *instant) wait(ctx context.Context) error {
	for {
		ready := true
		for i := range in.disks {
			k := &in.disks[i]
			found, _, _, cur, end, err := in.l.DomainGetBlockJobInfo(in.s.dom, k.Target, 0)
			if err != nil {
				return fmt.Errorf("libvirt: copy of disk %s: %w", k.Target, err)
			}
			if found == 0 {
				return fmt.Errorf("the copy of disk %s ended before it was in sync (the domain stopped, or QEMU failed it: see /var/log/libvirt/qemu/%s.log)", k.Target, in.s.Name)
			}
			// libvirt keeps cur below end until a copy is in sync.
			k.Done, k.Total = cur, end
			ready = ready && end > 0 && cur == end
		}
		if ready {
			return nil
		}
		in.report(InstantCopying)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(in.req.PollInterval):
		}
	}
}

// pivot switches every disk over to its copy. A copy in sync mirrors each
// guest write to both sides, so the switch loses nothing.
func (in *instant) pivot() error {
	for _, k := range in.disks {
		if err := in.l.DomainBlockJobAbort(in.s.dom, k.Target, golibvirt.DomainBlockJobAbortPivot); err != nil {
			return fmt.Errorf("libvirt: switch disk %s over to %s: %w", k.Target, k.File, err)
		}
		delete(in.copying, k.Target)
		in.switched = append(in.switched, k.Target+" ("+k.File+")")
	}
	// The domain must no longer read any overlay before the exports end.
	doc, err := in.l.DomainGetXMLDesc(in.s.dom, 0)
	if err != nil {
		return fmt.Errorf("libvirt: domain %s XML after the switch: %w", in.s.Name, err)
	}
	for _, k := range in.disks {
		if strings.Contains(doc, k.Overlay) || strings.Contains(doc, k.Socket) {
			return fmt.Errorf("disk %s still uses %s after the switch", k.Target, k.Overlay)
		}
	}
	return nil
}

// report calls Progress.
func (in *instant) report(p InstantPhase) {
	if in.req.Progress != nil {
		in.req.Progress(InstantProgress{Phase: p, Domain: in.s.Name, Dir: in.dir, Disks: slices.Clone(in.disks)})
	}
}

// cleanup stops the exports and removes the sockets and overlays.
func (in *instant) cleanup() {
	if in.stopServe != nil {
		in.stopServe()
		in.serving.Wait()
	}
	if in.dir != "" {
		os.RemoveAll(in.dir)
	}
}

// abandon ends a recovery that failed or was interrupted before the switch
// (or during it): the copies are cancelled and the transient run is
// destroyed, as the domain cannot run without the exports; the persistent
// definition was never changed. It returns cause with what the operator
// must know and do.
func (in *instant) abandon(cause error) error {
	var partial []string
	for _, k := range in.disks {
		if in.copying[k.Target] {
			in.l.DomainBlockJobAbort(in.s.dom, k.Target, 0)
			partial = append(partial, k.Target+" ("+k.File+")")
		}
	}
	var destroyErr error
	if in.started {
		if err := in.l.DomainDestroy(in.s.dom); err != nil && !golibvirt.IsNotFound(err) {
			if st, _, serr := in.l.DomainGetState(in.s.dom, 0); serr != nil || golibvirt.DomainState(st) != golibvirt.DomainShutoff {
				destroyErr = err
			}
		}
	}
	if destroyErr != nil {
		// The domain still reads the exports: keep them and the overlays
		// for as long as this process lives, and say so.
		return fmt.Errorf("instant recovery of domain %s failed: %w; destroying its transient run failed too (%v): destroy it (virsh destroy %s), then remove %s and restore the backup onto disks %s",
			in.s.Name, cause, destroyErr, in.s.Name, in.dir, strings.Join(partial, ", "))
	}
	in.cleanup()
	var state string
	switch {
	case len(partial) > 0:
		state = fmt.Sprintf("disks %s were being overwritten with the backup and now hold part of it and part of their old bytes: restore the backup onto them (csbs restore, csbs repo restore, or csbs instant-recover again) before starting the domain",
			strings.Join(partial, ", "))
	default:
		state = "no disk was written"
	}
	if len(in.switched) > 0 {
		state += fmt.Sprintf("; disks %s had been switched over and hold the backup with the guest's writes", strings.Join(in.switched, ", "))
	}
	switch {
	case in.started && len(in.switched) > 0:
		state += "; what the guest wrote while it ran from the backup is lost on every other disk"
	case in.started:
		state += "; what the guest wrote while it ran from the backup is lost"
	}
	return fmt.Errorf("instant recovery of domain %s did not finish: %w. The domain is shut off, its definition unchanged; %s", in.s.Name, cause, state)
}
