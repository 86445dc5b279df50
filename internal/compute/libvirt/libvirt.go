// Package libvirt is the compute driver for KVM virtual machines managed by
// libvirt (compute.driver: libvirt). Domains are servers; the disks of a
// domain's XML are its volumes. It talks to libvirtd through its RPC
// protocol (github.com/digitalocean/go-libvirt, pure Go) and reads and
// writes disks through QEMU over NBD (package nbd).
//
// Invariants:
//   - A server's id is its domain's UUID; a volume's id is VolumeID(domain
//     UUID, target dev). Both are stable across restarts of csbs and of the
//     domain.
//   - A domain belongs to the project of its <csbs:server
//     xmlns:csbs="urn:csbs:server:1" project_id="…"/> metadata, else to
//     Config.DefaultProject; with neither it is invisible. A domain of
//     another project is compute.ErrNotFound, never "forbidden".
//   - The inventory is read live from libvirtd on every call: a domain
//     defined a moment ago can be backed up at once.
//   - Bytes are always the guest's: a running domain is read through a
//     libvirt pull-mode backup job, a shut-off one through qemu-nbd with
//     the image's format, and restores write through qemu-nbd (qcow2) or
//     the file itself (raw). A qcow2 container is never read or written as
//     bytes.
//   - A changed-extent answer comes only from a dirty bitmap that libvirt
//     kept since the parent backup's checkpoint (see backup.go); anything
//     else is "unknown: read all".
package libvirt

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"

	"github.com/csbs/csbs/internal/compute"
)

// Config configures the driver.
type Config struct {
	// URI is libvirtd's connection URI; default qemu:///system.
	URI string
	// DefaultProject is the project of domains without csbs metadata;
	// empty: such domains are invisible.
	DefaultProject string
	// ScratchDir holds the sockets and scratch images of backup jobs and
	// the sockets of qemu-nbd; QEMU must be able to write there. Default
	// /var/tmp/csbs-libvirt.
	ScratchDir string
	// ShutdownTimeout is how long a restore waits for a domain to shut
	// down after an ACPI request before it destroys it; default 2m.
	ShutdownTimeout time.Duration
	// QemuNBD is the qemu-nbd program; default "qemu-nbd" from PATH.
	QemuNBD string
	Log     *slog.Logger
}

// Driver is the libvirt compute driver. It is safe for concurrent use.
type Driver struct {
	cfg Config
	uri *url.URL
	log *slog.Logger

	mu sync.Mutex
	l  *golibvirt.Libvirt

	// domainLocks serializes backups and restores of one domain: libvirt
	// runs one backup job per domain at a time.
	locksMu sync.Mutex
	locks   map[string]*sync.Mutex
}

var _ compute.Driver = (*Driver)(nil)

// New connects to libvirtd at cfg.URI. It fails when libvirtd cannot be
// reached; later calls reconnect when the connection drops.
func New(cfg Config) (*Driver, error) {
	if cfg.URI == "" {
		cfg.URI = "qemu:///system"
	}
	if cfg.ScratchDir == "" {
		cfg.ScratchDir = "/var/tmp/csbs-libvirt"
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 2 * time.Minute
	}
	if cfg.QemuNBD == "" {
		cfg.QemuNBD = "qemu-nbd"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	u, err := url.Parse(cfg.URI)
	if err != nil {
		return nil, fmt.Errorf("compute.libvirt.uri %q: %w", cfg.URI, err)
	}
	if err := os.MkdirAll(cfg.ScratchDir, 0o700); err != nil {
		return nil, fmt.Errorf("compute.libvirt scratch directory: %w", err)
	}
	d := &Driver{cfg: cfg, uri: u, log: cfg.Log, locks: map[string]*sync.Mutex{}}
	if _, err := d.conn(); err != nil {
		return nil, err
	}
	return d, nil
}

// Close disconnects from libvirtd.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.l == nil {
		return nil
	}
	err := d.l.Disconnect()
	d.l = nil
	return err
}

// conn returns the connection to libvirtd, reconnecting after a drop.
func (d *Driver) conn() (*golibvirt.Libvirt, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.l != nil {
		select {
		case <-d.l.Disconnected():
			d.l = nil
		default:
			return d.l, nil
		}
	}
	l, err := golibvirt.ConnectToURI(d.uri)
	if err != nil {
		return nil, fmt.Errorf("libvirt %s: %w (is libvirtd running, and may this user use its socket?)", d.cfg.URI, err)
	}
	d.l = l
	return l, nil
}

// lock serializes jobs on one domain until the returned func is called.
func (d *Driver) lock(id string) func() {
	d.locksMu.Lock()
	m := d.locks[id]
	if m == nil {
		m = &sync.Mutex{}
		d.locks[id] = m
	}
	d.locksMu.Unlock()
	m.Lock()
	return m.Unlock
}

// server is a domain as a compute.Server, with its disks.
type server struct {
	compute.Server
	dom   golibvirt.Domain
	disks []disk
	state golibvirt.DomainState
}

// Server returns the domain with UUID id if it is in project projectID
// ("" matches any), with its disks' guest-visible sizes.
func (d *Driver) Server(ctx context.Context, projectID, id string) (compute.Server, error) {
	s, err := d.server(ctx, projectID, id)
	return s.Server, err
}

func (d *Driver) server(ctx context.Context, projectID, id string) (server, error) {
	if err := ctx.Err(); err != nil {
		return server{}, err
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return server{}, fmt.Errorf("server %s: %w", id, compute.ErrNotFound)
	}
	l, err := d.conn()
	if err != nil {
		return server{}, err
	}
	dom, err := l.DomainLookupByUUID(golibvirt.UUID(u))
	if golibvirt.IsNotFound(err) {
		return server{}, fmt.Errorf("server %s: %w", id, compute.ErrNotFound)
	}
	if err != nil {
		return server{}, fmt.Errorf("libvirt: look up domain %s: %w", id, err)
	}
	s, ok, err := d.describe(l, dom)
	if err != nil {
		return server{}, err
	}
	if !ok || (projectID != "" && s.ProjectID != projectID) {
		return server{}, fmt.Errorf("server %s: %w", id, compute.ErrNotFound)
	}
	return s, nil
}

// Servers lists the domains of project projectID (all visible domains when
// it is ""), by name.
func (d *Driver) Servers(ctx context.Context, projectID string) ([]compute.Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := d.conn()
	if err != nil {
		return nil, err
	}
	doms, _, err := l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, fmt.Errorf("libvirt: list domains: %w", err)
	}
	var out []compute.Server
	for _, dom := range doms {
		s, ok, err := d.describe(l, dom)
		if golibvirt.IsNotFound(err) {
			continue // undefined while listing
		}
		if err != nil {
			return nil, err
		}
		if ok && (projectID == "" || s.ProjectID == projectID) {
			out = append(out, s.Server)
		}
	}
	slices.SortFunc(out, func(a, b compute.Server) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// describe reads a domain's definition and state; ok is false for a domain
// without a project (invisible).
func (d *Driver) describe(l *golibvirt.Libvirt, dom golibvirt.Domain) (server, bool, error) {
	doc, err := l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return server{}, false, fmt.Errorf("libvirt: domain %s XML: %w", dom.Name, err)
	}
	pd, err := parseDomain(doc, d.cfg.DefaultProject)
	if err != nil {
		return server{}, false, err
	}
	if pd.project == "" {
		return server{}, false, nil
	}
	st, _, err := l.DomainGetState(dom, 0)
	if err != nil {
		return server{}, false, fmt.Errorf("libvirt: domain %s state: %w", dom.Name, err)
	}
	s := server{dom: dom, disks: pd.disks, state: golibvirt.DomainState(st)}
	s.Server = compute.Server{
		ID: pd.id, Name: pd.name, ProjectID: pd.project, AZ: "az1", Status: status(s.state),
		VCPUs: pd.vcpus, RAM: pd.ramMB,
	}
	for i := range s.disks {
		// The capacity is what the guest sees (a qcow2's virtual size),
		// read from the image itself where csbs knows the format: asking
		// libvirt (virDomainGetBlockInfo) makes QEMU describe its block
		// nodes, and QEMU 7.2 can abort doing that while a backup job's
		// nodes are being torn down (seen in CI: an assertion in
		// qcow2_get_specific_info, the domain crashed). Servers are listed
		// on most requests, so that must not touch a running QEMU.
		if n, err := imageSize(s.disks[i].file, s.disks[i].format); err == nil {
			s.disks[i].vol.Size = n
		} else if _, capacity, _, err := l.DomainGetBlockInfo(dom, s.disks[i].target, 0); err == nil {
			s.disks[i].vol.Size = int64(capacity)
		}
		s.Volumes = append(s.Volumes, s.disks[i].vol)
	}
	if s.state == golibvirt.DomainRunning {
		s.PrivateIP = address(l, dom)
	}
	return s, true, nil
}

// imageSize returns the size the guest sees of a raw image (a file or a
// block device) or a qcow2 image (its header's virtual size).
func imageSize(file, format string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	switch format {
	case "raw":
		return f.Seek(0, io.SeekEnd) // a file's size, a block device's too
	case "qcow2":
		var h [32]byte
		if _, err := io.ReadFull(f, h[:]); err != nil {
			return 0, fmt.Errorf("%s: qcow2 header: %w", file, err)
		}
		if string(h[:4]) != "QFI\xfb" {
			return 0, fmt.Errorf("%s: not a qcow2 image", file)
		}
		return int64(binary.BigEndian.Uint64(h[24:32])), nil
	}
	return 0, fmt.Errorf("%s: format %s", file, format)
}

// address is the domain's first IPv4 address from libvirt's DHCP leases,
// else from the guest agent; "" when libvirt knows none.
func address(l *golibvirt.Libvirt, dom golibvirt.Domain) string {
	for _, src := range []golibvirt.DomainInterfaceAddressesSource{golibvirt.DomainInterfaceAddressesSrcLease, golibvirt.DomainInterfaceAddressesSrcAgent} {
		ifaces, err := l.DomainInterfaceAddresses(dom, uint32(src), 0)
		if err != nil {
			continue
		}
		for _, i := range ifaces {
			for _, a := range i.Addrs {
				if a.Type == int32(golibvirt.IPAddrTypeIpv4) && a.Addr != "" {
					return a.Addr
				}
			}
		}
	}
	return ""
}

// status maps a libvirt domain state to a server status.
func status(st golibvirt.DomainState) string {
	switch st {
	case golibvirt.DomainRunning, golibvirt.DomainBlocked:
		return "ACTIVE"
	case golibvirt.DomainShutoff:
		return "SHUTOFF"
	case golibvirt.DomainPaused:
		return "PAUSED"
	case golibvirt.DomainShutdown:
		return "SHUTTING_DOWN"
	case golibvirt.DomainCrashed:
		return "ERROR"
	case golibvirt.DomainPmsuspended:
		return "SUSPENDED"
	}
	return "UNKNOWN"
}

// findDisk returns the disk of s with volume id.
func (s server) findDisk(id string) (disk, error) {
	for _, k := range s.disks {
		if k.vol.ID == id {
			return k, nil
		}
	}
	return disk{}, fmt.Errorf("domain %s has no disk %s", s.Name, id)
}
