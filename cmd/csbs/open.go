package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/mount"
	"github.com/csbs/csbs/internal/nbd"
	"github.com/csbs/csbs/internal/repository"
)

// Opening a backup without restoring it: csbs mount and csbs export read
// the repository directly (like csbs repo), through VolumeReaders that hold
// a lease, so garbage collection removes nothing under them.

// findSnapshots returns the snapshot of backup (its id, with or without
// dashes), or every snapshot of server, oldest first.
func findSnapshots(ctx context.Context, repo *repository.Repository, backup, server string) ([]*repository.Snapshot, error) {
	snaps, err := repo.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	var out []*repository.Snapshot
	for _, s := range snaps {
		switch {
		case backup != "" && (s.Meta["item_id"] == backup || s.ID == strings.ReplaceAll(backup, "-", "")):
			out = append(out, s)
		case server != "" && s.Meta["server_id"] == server:
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		if backup != "" {
			return nil, fmt.Errorf("no backup %s in the repository (csbs repo ls lists them)", backup)
		}
		return nil, fmt.Errorf("no backup of server %s in the repository (csbs repo ls lists them)", server)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// volumeFileName is how a disk shows in a mount: its name, else its id.
func volumeFileName(vm repository.VolumeManifest) string {
	name := vm.Name
	if name == "" {
		name = vm.VolumeID
	}
	return strings.ReplaceAll(name, "/", "_") + ".img"
}

// disk is a disk of a backup to serve, read directly from the repository
// (a VolumeReader, which knows its holes) or through the API.
type disk struct {
	name, volumeID string
	r              diskReader
}

// diskReader reads a disk of a backup: from the repository (a
// *repository.VolumeReader) or through the API.
type diskReader interface {
	io.ReaderAt
	Size() int64
}

// backupDisks are the disks of one backup.
type backupDisks struct {
	id     string // the backup (checkpoint_item) id
	server string // the server backed up
	time   time.Time
	disks  []disk
}

// opener finds backups and opens their disks: from the repository when a
// repository flag or configuration is given, else through the API with the
// CLI's connection settings (and the service's identity rules).
type opener struct {
	repo        repoFlags
	conn        *conn
	cacheChunks int
}

func (o *opener) register(cmd *cobra.Command) {
	o.repo.register(cmd)
	o.conn = addConnFlags(cmd)
}

// direct reports whether the repository is read directly.
func (o *opener) direct() bool {
	f := o.repo
	return f.config != "" || f.dataDir != "" || f.path != "" || f.url != "" || f.passwordFile != "" ||
		os.Getenv("CSBS_DATA_DIR") != "" || os.Getenv("CSBS_REPOSITORY_URL") != ""
}

// open returns the backups asked for (one, or all of a server's) with
// their disks opened, and a function that closes everything.
func (o *opener) open(ctx context.Context, backup, server string) ([]backupDisks, func(), error) {
	var closers []func() error
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if !o.direct() {
		out, err := o.remote(ctx, backup, server)
		return out, func() {}, err
	}
	repo, err := o.repo.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, repo.Close)
	snaps, err := findSnapshots(ctx, repo, backup, server)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	var out []backupDisks
	for _, s := range snaps {
		b := backupDisks{id: s.Meta["item_id"], server: s.Meta["server_id"], time: s.Time}
		if b.id == "" {
			b.id = s.ID
		}
		for i := range s.Volumes {
			r, err := repo.OpenVolume(ctx, &s.Volumes[i], o.cacheChunks)
			if err != nil {
				closeAll()
				return nil, nil, err
			}
			closers = append(closers, r.Close)
			b.disks = append(b.disks, disk{name: volumeFileName(s.Volumes[i]), volumeID: s.Volumes[i].VolumeID, r: r})
		}
		out = append(out, b)
	}
	return out, closeAll, nil
}

// remote opens the disks through the API: GET …/volumes/{id}/data with
// Range requests, as the token's project allows.
func (o *opener) remote(ctx context.Context, backup, server string) ([]backupDisks, error) {
	cl, err := o.conn.client(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w (or read the repository directly: --config, --data-dir or --repository-path)", err)
	}
	type item struct {
		ID         string `json:"id"`
		ResourceID string `json:"resource_id"`
		Status     string `json:"status"`
		CreatedAt  string `json:"created_at"`
		ExtendInfo struct {
			VolumeBackups []struct {
				SourceVolumeID   string `json:"source_volume_id"`
				SourceVolumeName string `json:"source_volume_name"`
			} `json:"volume_backups"`
		} `json:"extend_info"`
	}
	var items []item
	if backup != "" {
		var one struct {
			Item item `json:"checkpoint_item"`
		}
		if err := cl.Do(ctx, "GET", "/checkpoint_items/"+url.PathEscape(backup), nil, nil, &one); err != nil {
			return nil, err
		}
		items = append(items, one.Item)
	} else {
		var list struct {
			Items []item `json:"checkpoint_items"`
		}
		q := url.Values{"resource_id": {server}, "status": {"available"}, "sort": {"created_at:asc"}}
		if err := cl.Do(ctx, "GET", "/checkpoint_items", q, nil, &list); err != nil {
			return nil, err
		}
		if len(list.Items) == 0 {
			return nil, fmt.Errorf("server %s has no available backup", server)
		}
		items = list.Items
	}
	var out []backupDisks
	for _, it := range items {
		t, _ := time.Parse("2006-01-02T15:04:05.999999", it.CreatedAt)
		b := backupDisks{id: it.ID, server: it.ResourceID, time: t}
		for _, vb := range it.ExtendInfo.VolumeBackups {
			d, err := cl.OpenDisk(ctx, it.ID, vb.SourceVolumeID)
			if err != nil {
				return nil, fmt.Errorf("backup %s, disk %s: %w", it.ID, vb.SourceVolumeID, err)
			}
			b.disks = append(b.disks, disk{name: volumeFileName(repository.VolumeManifest{VolumeID: vb.SourceVolumeID, Name: vb.SourceVolumeName}),
				volumeID: vb.SourceVolumeID, r: d})
		}
		out = append(out, b)
	}
	return out, nil
}

// mountVolume and nbdVolume adapt a VolumeReader to the packages that
// serve it.
type mountVolume struct{ *repository.VolumeReader }

func (v mountVolume) Extents(off, n int64) []mount.Extent {
	var out []mount.Extent
	for _, e := range v.VolumeReader.Extents(off, n) {
		out = append(out, mount.Extent{Offset: e.Offset, Length: e.Length, Data: e.Data})
	}
	return out
}

// mountFile is how a disk shows in a mount.
func mountFile(d disk) mount.File {
	if r, ok := d.r.(*repository.VolumeReader); ok {
		return mountVolume{r}
	}
	return d.r
}

// nbdDisk is how a disk is served over NBD: with its holes when read from
// the repository; a disk read through the API does not know its holes and
// is served as data everywhere.
func nbdDisk(d disk) nbd.Disk {
	if r, ok := d.r.(*repository.VolumeReader); ok {
		return nbd.VolumeDisk{VolumeReader: r}
	}
	return apiDisk{d.r}
}

// apiDisk is a disk read through the API, reported as data everywhere.
type apiDisk struct{ diskReader }

func (d apiDisk) Extents(off, n int64) []nbd.Extent {
	return []nbd.Extent{{Off: off, Len: min(n, d.Size()-off)}}
}

func mountCmd() *cobra.Command {
	var o opener
	var backup, server string
	cmd := &cobra.Command{
		Use:   "mount (--backup ID | --server ID) DIR",
		Short: "Mount backups read-only: one file per disk, read on demand",
		Long: `Mount the disks of a backup read-only on DIR, one file per disk named after
the disk (<name>.img, the size of the disk), read on demand: nothing is
restored. With --server, DIR holds one directory per backup of the server
(<time>_<backup id>). Files inside a disk are reached by mounting its
partition read-only (docs/file-restore.md). It runs until interrupted (Ctrl-C,
SIGTERM) or until DIR is unmounted.

With --config, --data-dir or --repository-path it reads the repository
directly with its password, like csbs repo (the operator's way; it also works
when the service is down). Otherwise it reads through a csbs service with the
connection settings of the other commands (CSBS_ENDPOINT and CSBS_TOKEN, or
OS_AUTH_URL and the OS_… variables), as the token's project allows. Either way
garbage collection removes nothing it reads while it is mounted, even a backup
deleted meanwhile.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (backup == "") == (server == "") {
				return errors.New("give --backup ID or --server ID")
			}
			ctx, stop := signalContext()
			defer stop()
			backups, closeAll, err := o.open(ctx, backup, server)
			if err != nil {
				return err
			}
			defer closeAll()
			root := &mount.Dir{Files: map[string]mount.File{}, Dirs: map[string]*mount.Dir{}}
			for _, b := range backups {
				d := root
				if server != "" {
					d = &mount.Dir{Files: map[string]mount.File{}}
					root.Dirs[b.time.UTC().Format("2006-01-02T15-04-05")+"_"+b.id] = d
				}
				for _, dk := range b.disks {
					d.Files[dk.name] = mountFile(dk)
				}
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			srv, err := mount.Mount(args[0], root, log)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "mounted %d backup(s) read-only on %s; Ctrl-C or umount ends it\n", len(backups), args[0])
			go func() {
				<-ctx.Done()
				srv.Unmount()
			}()
			srv.Wait()
			return nil
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&backup, "backup", "", "the backup (checkpoint_item id) to mount")
	cmd.Flags().StringVar(&server, "server", "", "mount every backup of this server, one directory each")
	cmd.Flags().IntVar(&o.cacheChunks, "cache-chunks", repository.DefaultReaderCache, "chunks kept in memory per disk (reading the repository directly)")
	return cmd
}

func exportCmd() *cobra.Command {
	var o opener
	var backup, volume, listen string
	var allowRemote bool
	cmd := &cobra.Command{
		Use:   "export --backup ID --volume VOLUME_ID --listen unix:PATH|HOST:PORT",
		Short: "Serve a disk of a backup read-only over NBD (for QEMU and qemu-img)",
		Long: `Serve one disk of a backup read-only over the Network Block Device protocol,
read on demand, so that QEMU's tools and QEMU itself read it without a
restore:

  qemu-img convert -O qcow2 'nbd+unix:///?socket=/run/csbs.sock' disk.qcow2
  qemu-img create -f qcow2 -b 'nbd+unix:///?socket=/run/csbs.sock' -F raw overlay.qcow2

Clients get holes and block status, so they skip what the disk does not hold
(when the repository is read directly). It listens on a unix socket or on a
loopback address; another address needs --allow-remote (there is no TLS and no
authentication: anyone who reaches the port reads the disk). The repository is
read directly or through a csbs service, as for csbs mount. It runs until
interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if backup == "" || volume == "" || listen == "" {
				return errors.New("give --backup, --volume and --listen")
			}
			network, addr, err := listenAddress(listen, allowRemote)
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			backups, closeAll, err := o.open(ctx, backup, "")
			if err != nil {
				return err
			}
			defer closeAll()
			var d *disk
			var ids []string
			for i, dk := range backups[0].disks {
				ids = append(ids, dk.volumeID)
				if dk.volumeID == volume {
					d = &backups[0].disks[i]
				}
			}
			if d == nil {
				return fmt.Errorf("backup %s has no disk %s; its disks: %s", backup, volume, strings.Join(ids, ", "))
			}
			if network == "unix" {
				os.Remove(addr) // a socket left by an earlier run
			}
			l, err := net.Listen(network, addr)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "serving disk %s of backup %s (%d bytes) read-only over NBD on %s:%s; Ctrl-C ends it\n",
				volume, backup, d.r.Size(), network, l.Addr())
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			return (&nbd.Server{Disk: nbdDisk(*d), Name: volume, Log: log}).Serve(ctx, l)
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&backup, "backup", "", "the backup (checkpoint_item id)")
	cmd.Flags().StringVar(&volume, "volume", "", "the disk's volume id (csbs repo ls or csbs backup show list them)")
	cmd.Flags().StringVar(&listen, "listen", "", "unix:PATH, or HOST:PORT on loopback")
	cmd.Flags().BoolVar(&allowRemote, "allow-remote", false, "allow a non-loopback address (no TLS, no authentication)")
	return cmd
}

// listenAddress reads --listen: unix:PATH, or HOST:PORT that must be a
// loopback address unless allowRemote.
func listenAddress(s string, allowRemote bool) (network, addr string, err error) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if p == "" {
			return "", "", errors.New("--listen unix: needs a path")
		}
		return "unix", p, nil
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return "", "", fmt.Errorf("--listen %q: want unix:PATH or HOST:PORT: %w", s, err)
	}
	if !allowRemote {
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "", "", fmt.Errorf("--listen %q is not a loopback address: anyone who reaches it reads the disk; give --allow-remote to serve it anyway", s)
		}
	}
	return "tcp", s, nil
}
