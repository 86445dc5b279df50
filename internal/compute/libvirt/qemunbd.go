package libvirt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/nbd"
)

// qemuNBD is a qemu-nbd process serving one image as export "disk" on a
// unix socket, for one client: it exits when the client disconnects.
type qemuNBD struct {
	cmd    *exec.Cmd
	dir    string
	sock   string
	stderr *syncBuffer
	exited chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 4096 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSpace(s.b.String())
}

// serveImage starts qemu-nbd on file with its format. Read-only exports
// take QEMU's shared image lock: a domain cannot start writing the image
// meanwhile (it fails to start), and qemu-nbd refuses an image a running
// domain writes.
func (d *Driver) serveImage(ctx context.Context, file, format string, readOnly bool) (*qemuNBD, error) {
	dir, err := os.MkdirTemp(d.cfg.ScratchDir, "nbd-")
	if err != nil {
		return nil, fmt.Errorf("scratch directory: %w", err)
	}
	q := &qemuNBD{dir: dir, sock: filepath.Join(dir, "nbd.sock"), stderr: &syncBuffer{}, exited: make(chan struct{})}
	args := []string{"--format", format, "--socket", q.sock, "--export-name", "disk", "--cache", "none", "--aio", "threads"}
	if readOnly {
		args = append(args, "--read-only")
	} else {
		args = append(args, "--discard", "unmap", "--detect-zeroes", "unmap")
	}
	q.cmd = exec.Command(d.cfg.QemuNBD, append(args, file)...)
	q.cmd.Stderr = q.stderr
	if err := q.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start qemu-nbd (Debian: qemu-utils): %w", err)
	}
	go func() { q.cmd.Wait(); close(q.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(q.sock); err == nil {
			return q, nil
		}
		select {
		case <-q.exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("qemu-nbd %s: %s", file, q.stderr.String())
		case <-ctx.Done():
			q.stop()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			q.stop()
			return nil, fmt.Errorf("qemu-nbd %s did not open its socket in 15s: %s", file, q.stderr.String())
		}
	}
}

// dial connects to the export. qemu-nbd creates its socket (bind) a moment
// before it listens, and a connect in between is refused: that is retried
// while qemu-nbd lives, up to 15 s. A probe connection cannot be used to
// wait instead, as qemu-nbd exits when its first client leaves.
func (q *qemuNBD) dial(ctx context.Context, contexts ...string) (*nbd.Conn, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := nbd.Dial(ctx, "unix", q.sock, "disk", contexts...)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-q.exited:
			return nil, fmt.Errorf("qemu-nbd exited: %s", q.stderr.String())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stop waits a little for qemu-nbd to exit after its client left, kills
// it otherwise, and removes its directory.
func (q *qemuNBD) stop() {
	select {
	case <-q.exited:
	case <-time.After(5 * time.Second):
		q.cmd.Process.Kill()
		<-q.exited
	}
	os.RemoveAll(q.dir)
}

// readShutOff reads the disks of a shut-off domain through qemu-nbd: the
// guest's bytes, with holes from base:allocation. Nothing writes them, so
// the snapshot is consistent; there is no dirty bitmap to ask, so changes
// are unknown and no checkpoint is made.
func (d *Driver) readShutOff(ctx context.Context, s server, unlock func()) (_ *compute.Snapshot, err error) {
	var servers []*qemuNBD
	var conns []*nbd.Conn
	cleanup := func() {
		for _, c := range conns {
			c.Close()
		}
		for _, q := range servers {
			q.stop()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	vols := make([]compute.SnapshotVolume, len(s.disks))
	for i, k := range s.disks {
		q, err := d.serveImage(ctx, k.file, k.format, true)
		if err != nil {
			return nil, &compute.VolumeError{VolumeID: k.vol.ID, Name: k.vol.Name, Path: k.file, Err: err}
		}
		servers = append(servers, q)
		c, err := q.dial(ctx, "base:allocation")
		if err != nil {
			return nil, &compute.VolumeError{VolumeID: k.vol.ID, Name: k.vol.Name, Path: k.file, Err: err}
		}
		conns = append(conns, c)
		v := k.vol
		v.Size = c.Size()
		vols[i] = compute.SnapshotVolume{Volume: v, Path: k.file, Size: c.Size(),
			Reader: newReader(c, nil, "", "the domain is shut off: read through qemu-nbd, without a dirty bitmap")}
	}
	return compute.NewSnapshot(true, "qemu-nbd", vols, func() error {
		cleanup()
		unlock()
		return nil
	}), nil
}

// isNoCheckpoint reports whether err is libvirt's "no such checkpoint".
func isNoCheckpoint(err error) bool {
	var le golibvirt.Error
	return errors.As(err, &le) && le.Code == uint32(golibvirt.ErrNoDomainCheckpoint)
}
