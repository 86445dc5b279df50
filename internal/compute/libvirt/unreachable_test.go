package libvirt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/repository"
)

// libvirtSocket is libvirtd's read-write socket on Debian.
const libvirtSocket = "/run/libvirt/libvirt-sock"

// cutProxy forwards a unix socket to libvirtd's and can cut every
// connection and refuse new ones (cut), then accept again (resume). To the
// driver a cut looks as libvirtd stopping does: its connection ends and
// new ones are refused, while QEMU and the backup job's NBD server go on.
// (Stopping the real daemon would break the tests that run beside this one.)
type cutProxy struct {
	path string
	mu   sync.Mutex
	ln   net.Listener
	open []net.Conn
}

func newCutProxy(t *testing.T) *cutProxy {
	p := &cutProxy{path: filepath.Join(t.TempDir(), "libvirt.sock")}
	p.resume(t)
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) resume(t *testing.T) {
	t.Helper()
	os.Remove(p.path)
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", libvirtSocket)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.open = append(p.open, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.open {
		c.Close()
	}
	p.open = nil
}

// TestLibvirtdUnreachable: libvirtd goes away while a backup reads the
// disks of a running domain. What the backup reads comes from QEMU's NBD
// server, so either it reads the guest's bytes exactly as they were at the
// backup's instant or it fails saying so; never other bytes. While libvirtd
// is away a backup fails saying libvirtd is unreachable. When it is back,
// the next backup ends the job left behind and is an exact incremental of
// the one before.
func TestLibvirtdUnreachable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, "")
	td := newDomain(t, d, "p1", true)
	p := newCutProxy(t)
	d2, err := New(Config{URI: "qemu+unix:///system?socket=" + url.QueryEscape(p.path), ScratchDir: d.cfg.ScratchDir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	repo := newRepo(t)

	// The guest's vda as it should be read, written the same way.
	guest := make([]byte, 32*mib)
	write := func(pattern byte, off, n int) {
		td.write(t, 0, fmt.Sprintf("write -P %#x %d %d", pattern, off, n))
		copy(guest[off:off+n], bytes.Repeat([]byte{pattern}, n))
	}
	restored := func(vm *repository.VolumeManifest) []byte {
		f, err := os.Create(filepath.Join(t.TempDir(), "vda"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := repo.RestoreVolume(ctx, vm, f, nil); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	write(0x11, 1*mib, 256<<10)
	s, err := d2.Server(ctx, "p1", td.id)
	if err != nil {
		t.Fatal(err)
	}
	snap1, err := d2.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	m1, _, _ := backupAll(t, repo, snap1, nil)
	snap1.Release()

	// Backup u2 starts; libvirtd goes away while it reads.
	write(0x22, 5*mib, 64<<10)
	at2 := bytes.Clone(guest)
	snap2, err := d2.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "u2", Parent: &compute.Parent{BackupID: "u1", Token: CheckpointName("u1")}})
	if err != nil {
		t.Fatal(err)
	}
	p.cut()
	write(0x33, 5*mib, 64<<10) // after the backup's instant: must not show in u2
	m2, err2 := tryBackupAll(ctx, repo, snap2, m1)
	snap2.Release() // ending the job fails: libvirtd is away (logged)
	if err2 == nil {
		if got := restored(m2[td.volIDs[0]]); !bytes.Equal(got, at2) {
			t.Fatal("the backup read while libvirtd was away restores to other bytes than the guest's at its instant")
		}
	} else if !strings.Contains(err2.Error(), "nbd") {
		t.Fatalf("the backup failed without saying why: %v", err2)
	}

	// While libvirtd is away, a backup fails and says what to check.
	if _, err := d2.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "u3"}); err == nil || !strings.Contains(err.Error(), "is libvirtd running") {
		t.Fatalf("backup while libvirtd is away: %v; want an error naming libvirtd", err)
	}

	// Back: the next backup ends the job left behind and reads only what
	// changed since its parent.
	p.resume(t)
	parent, pm := &compute.Parent{BackupID: "u1", Token: CheckpointName("u1")}, m1
	if err2 == nil {
		parent, pm = &compute.Parent{BackupID: "u2", Token: CheckpointName("u2")}, m2
	}
	write(0x44, 20*mib, 64<<10)
	snap3, err := d2.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "u3", Parent: parent})
	if err != nil {
		t.Fatalf("backup after libvirtd came back: %v", err)
	}
	m3, _, ch3 := backupAll(t, repo, snap3, pm)
	snap3.Release()
	if c := ch3[td.volIDs[0]]; !c.Known {
		t.Errorf("after libvirtd came back the incremental read all: %s", c.Reason)
	}
	if got := restored(m3[td.volIDs[0]]); !bytes.Equal(got, guest) {
		t.Error("the backup after libvirtd came back restores to other bytes than the guest's")
	}
	t.Logf("the backup read while libvirtd was away ended with: %v", err2)
}
