package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/nbd"
)

// Restore deletes csbs's checkpoints and shuts the domain down (ACPI, then
// destroy after Config.ShutdownTimeout) before anything is written: the bytes a restore writes are not seen by the dirty bitmaps,
// so the next backup must read every disk whole. (Deleting them first
// also covers a restore that fails half-way.)
func (d *Driver) Restore(ctx context.Context, cs compute.Server) (compute.Restore, error) {
	unlock := d.lock(cs.ID)
	defer unlock()
	s, err := d.server(ctx, "", cs.ID)
	if err != nil {
		return nil, err
	}
	l, err := d.conn()
	if err != nil {
		return nil, err
	}
	// libvirt deletes a checkpoint with its bitmaps only from a running
	// domain; a shut-off one loses the metadata here and the bitmaps below.
	if err := d.dropAllCheckpoints(l, s); err != nil {
		return nil, fmt.Errorf("domain %s (nothing was written): %w", s.Name, err)
	}
	if err := d.shutdown(ctx, l, s); err != nil {
		return nil, fmt.Errorf("stop domain %s before restoring (nothing was written): %w", s.Name, err)
	}
	if err := d.dropAllCheckpoints(l, s); err != nil { // made in between
		return nil, fmt.Errorf("domain %s (nothing was written): %w", s.Name, err)
	}
	if err := d.removeBitmaps(ctx, s); err != nil {
		return nil, fmt.Errorf("domain %s (nothing was written): %w", s.Name, err)
	}
	return &restore{d: d, s: s}, nil
}

// removeBitmaps removes csbs's persistent bitmaps from the qcow2 disks of a
// shut-off domain (qemu-img), those whose checkpoint libvirt could only
// forget: stale bitmaps cost a little on every guest write.
func (d *Driver) removeBitmaps(ctx context.Context, s server) error {
	for _, k := range s.disks {
		if !k.bitmaps() {
			continue
		}
		out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", k.file).Output()
		if err != nil {
			return fmt.Errorf("qemu-img info %s: %w", k.file, err)
		}
		var info struct {
			FormatSpecific struct {
				Data struct {
					Bitmaps []struct {
						Name string `json:"name"`
					} `json:"bitmaps"`
				} `json:"data"`
			} `json:"format-specific"`
		}
		if err := json.Unmarshal(out, &info); err != nil {
			return fmt.Errorf("qemu-img info %s: %w", k.file, err)
		}
		for _, b := range info.FormatSpecific.Data.Bitmaps {
			if !strings.HasPrefix(b.Name, CheckpointPrefix) {
				continue
			}
			if out, err := exec.CommandContext(ctx, "qemu-img", "bitmap", "--remove", k.file, b.Name).CombinedOutput(); err != nil {
				return fmt.Errorf("qemu-img bitmap --remove %s %s: %w: %s", k.file, b.Name, err, strings.TrimSpace(string(out)))
			}
		}
	}
	return nil
}

// shutdown stops a domain: an ACPI shutdown, then destroy when it is still
// running after the timeout.
func (d *Driver) shutdown(ctx context.Context, l *golibvirt.Libvirt, s server) error {
	state := func() golibvirt.DomainState {
		st, _, err := l.DomainGetState(s.dom, 0)
		if err != nil {
			return golibvirt.DomainNostate
		}
		return golibvirt.DomainState(st)
	}
	if state() == golibvirt.DomainShutoff {
		return nil
	}
	if err := l.DomainShutdown(s.dom); err != nil {
		d.log.Info("compute/libvirt: ACPI shutdown refused; destroying", "domain", s.Name, "err", err)
	} else {
		deadline := time.Now().Add(d.cfg.ShutdownTimeout)
		for time.Now().Before(deadline) && state() != golibvirt.DomainShutoff {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if state() == golibvirt.DomainShutoff {
		return nil
	}
	d.log.Info("compute/libvirt: domain did not shut down in time; destroying it", "domain", s.Name, "timeout", d.cfg.ShutdownTimeout)
	if err := l.DomainDestroy(s.dom); err != nil && state() != golibvirt.DomainShutoff {
		return fmt.Errorf("destroy: %w", err)
	}
	return nil
}

// dropAllCheckpoints deletes every csbs checkpoint of the domain, with its
// bitmaps where libvirt can, its metadata at least: either way no later
// backup can find it.
func (d *Driver) dropAllCheckpoints(l *golibvirt.Libvirt, s server) error {
	cps, _, err := l.DomainListAllCheckpoints(s.dom, 1, 0)
	if err != nil {
		return fmt.Errorf("list checkpoints: %w", err)
	}
	var errs []error
	for _, cp := range cps {
		if !strings.HasPrefix(cp.Name, CheckpointPrefix) {
			continue
		}
		err := l.DomainCheckpointDelete(cp, 0)
		if err != nil && !isNoCheckpoint(err) {
			d.log.Warn("compute/libvirt: delete checkpoint; deleting its metadata only", "domain", s.Name, "checkpoint", cp.Name, "err", err)
			err = l.DomainCheckpointDelete(cp, golibvirt.DomainCheckpointDeleteMetadataOnly)
		}
		if err != nil && !isNoCheckpoint(err) {
			errs = append(errs, fmt.Errorf("delete checkpoint %s: %w", cp.Name, err))
		}
	}
	return errors.Join(errs...)
}

// restore writes the disks of a shut-off domain.
type restore struct {
	d *Driver
	s server
}

// Open returns a writer of guest-visible bytes: a raw image or device is
// written directly, any other format through qemu-nbd.
func (r *restore) Open(ctx context.Context, v compute.Volume) (compute.VolumeWriter, error) {
	k, err := r.s.findDisk(v.ID)
	if err != nil {
		return nil, err
	}
	if k.format == "raw" {
		return local.OpenWriter(k.file)
	}
	q, err := r.d.serveImage(ctx, k.file, k.format, false)
	if err != nil {
		return nil, err
	}
	c, err := q.dial(ctx)
	if err != nil {
		q.stop()
		return nil, err
	}
	return &nbdWriter{c: c, q: q}, nil
}

// Finish starts the domain when powerOn; the checkpoints were dropped
// before anything was written.
func (r *restore) Finish(ctx context.Context, powerOn bool) error {
	if !powerOn {
		return nil
	}
	l, err := r.d.conn()
	if err != nil {
		return fmt.Errorf("every disk was restored, but starting domain %s failed: %w", r.s.Name, err)
	}
	if err := l.DomainCreate(r.s.dom); err != nil {
		return fmt.Errorf("every disk was restored, but starting domain %s failed: %w", r.s.Name, err)
	}
	return nil
}

// nbdWriter writes a disk through qemu-nbd.
type nbdWriter struct {
	c *nbd.Conn
	q *qemuNBD
}

func (w *nbdWriter) WriteAt(p []byte, off int64) (int, error) { return w.c.WriteAt(p, off) }

func (w *nbdWriter) Zero(ctx context.Context, off, n int64) error { return w.c.Zero(ctx, off, n) }

// Close flushes (qemu-nbd syncs the image) and stops qemu-nbd.
func (w *nbdWriter) Close() error {
	err := w.c.Flush(context.Background())
	w.c.Close()
	w.q.stop()
	if err != nil {
		return fmt.Errorf("flush the restored disk: %w", err)
	}
	return nil
}
