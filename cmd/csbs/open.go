package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"

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

type nbdVolume struct{ *repository.VolumeReader }

func (v nbdVolume) Extents(off, n int64) []nbd.Extent {
	var out []nbd.Extent
	for _, e := range v.VolumeReader.Extents(off, n) {
		out = append(out, nbd.Extent{Offset: e.Offset, Length: e.Length, Data: e.Data})
	}
	return out
}

func mountCmd() *cobra.Command {
	var f repoFlags
	var backup, server string
	var cache int
	cmd := &cobra.Command{
		Use:   "mount (--backup ID | --server ID) DIR",
		Short: "Mount backups read-only: one file per disk, read on demand",
		Long: `Mount the disks of a backup read-only on DIR, one file per disk named after
the disk (<name>.img, the size of the disk), read from the repository on
demand: nothing is restored. With --server, DIR holds one directory per backup
of the server (<time>_<backup id>). Files inside a disk are reached by mounting
its partition read-only (docs/file-restore.md). It runs until interrupted
(Ctrl-C, SIGTERM) or until DIR is unmounted.

Like csbs repo, it reads the repository directly with its password, through
--config or --repository-path and --password-file; garbage collection
removes nothing it reads while it is mounted, even a backup deleted meanwhile.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (backup == "") == (server == "") {
				return errors.New("give --backup ID or --server ID")
			}
			ctx, stop := signalContext()
			defer stop()
			repo, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer repo.Close()
			snaps, err := findSnapshots(ctx, repo, backup, server)
			if err != nil {
				return err
			}
			root := &mount.Dir{Files: map[string]mount.File{}, Dirs: map[string]*mount.Dir{}}
			var readers []*repository.VolumeReader
			defer func() {
				for _, r := range readers {
					r.Close()
				}
			}()
			for _, s := range snaps {
				d := root
				if server != "" {
					d = &mount.Dir{Files: map[string]mount.File{}}
					root.Dirs[s.Time.UTC().Format("2006-01-02T15-04-05")+"_"+s.Meta["item_id"]] = d
				}
				for i := range s.Volumes {
					r, err := repo.OpenVolume(ctx, &s.Volumes[i], cache)
					if err != nil {
						return err
					}
					readers = append(readers, r)
					d.Files[volumeFileName(s.Volumes[i])] = mountVolume{r}
				}
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			srv, err := mount.Mount(args[0], root, log)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "mounted %d backup(s) read-only on %s; Ctrl-C or umount ends it\n", len(snaps), args[0])
			go func() {
				<-ctx.Done()
				srv.Unmount()
			}()
			srv.Wait()
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&backup, "backup", "", "the backup (checkpoint_item id) to mount")
	cmd.Flags().StringVar(&server, "server", "", "mount every backup of this server, one directory each")
	cmd.Flags().IntVar(&cache, "cache-chunks", repository.DefaultReaderCache, "chunks kept in memory per disk")
	return cmd
}

func exportCmd() *cobra.Command {
	var f repoFlags
	var backup, volume, listen string
	var allowRemote bool
	cmd := &cobra.Command{
		Use:   "export --backup ID --volume VOLUME_ID --listen unix:PATH|HOST:PORT",
		Short: "Serve a disk of a backup read-only over NBD (for QEMU and qemu-img)",
		Long: `Serve one disk of a backup read-only over the Network Block Device protocol,
read from the repository on demand, so that QEMU's tools and QEMU itself read
it without a restore:

  qemu-img convert -O qcow2 'nbd+unix:///?socket=/run/csbs.sock' disk.qcow2
  qemu-img create -f qcow2 -b 'nbd+unix:///?socket=/run/csbs.sock' -F raw overlay.qcow2

Clients get holes and block status, so they skip what the disk does not hold.
It listens on a unix socket or on a loopback address; another address needs
--allow-remote (there is no TLS and no authentication: anyone who reaches the
port reads the disk). Like csbs repo, it reads the repository directly with its
password; it runs until interrupted.`,
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
			repo, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer repo.Close()
			snaps, err := findSnapshots(ctx, repo, backup, "")
			if err != nil {
				return err
			}
			var vm *repository.VolumeManifest
			var ids []string
			for i, v := range snaps[0].Volumes {
				ids = append(ids, v.VolumeID)
				if v.VolumeID == volume {
					vm = &snaps[0].Volumes[i]
				}
			}
			if vm == nil {
				return fmt.Errorf("backup %s has no disk %s; its disks: %s", backup, volume, strings.Join(ids, ", "))
			}
			r, err := repo.OpenVolume(ctx, vm, 0)
			if err != nil {
				return err
			}
			defer r.Close()
			if network == "unix" {
				os.Remove(addr) // a socket left by an earlier run
			}
			l, err := net.Listen(network, addr)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "serving disk %s of backup %s (%d bytes) read-only over NBD on %s:%s; Ctrl-C ends it\n",
				volume, backup, r.Size(), network, l.Addr())
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			return (&nbd.Server{Disk: nbdVolume{r}, Name: volume, Log: log}).Serve(ctx, l)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&backup, "backup", "", "the backup (checkpoint_item id)")
	cmd.Flags().StringVar(&volume, "volume", "", "the disk's volume id (csbs repo ls lists them)")
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
