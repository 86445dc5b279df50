package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/compute/libvirt"
	"github.com/csbs/csbs/internal/config"
	"github.com/csbs/csbs/internal/nbd"
	"github.com/csbs/csbs/internal/repository"
)

func instantRecoverCmd() *cobra.Command {
	var o opener
	var backup, uri string
	var stop bool
	var bandwidth float64
	cmd := &cobra.Command{
		Use:   "instant-recover --backup ID [--stop]",
		Short: "Start a libvirt domain from a backup now and copy the backup onto its disks while it runs",
		Long: `Start the libvirt domain that a backup was taken of from the backup at once,
without waiting for a restore, and move the backup onto the domain's disks
while it runs (docs/libvirt.md, "Instant recovery"):

  1. each disk of the backup is served over NBD on a unix socket, and a
     qcow2 overlay is made on top of it (in a fresh directory under
     compute.libvirt.scratch_dir);
  2. the domain starts from its definition with those disks on the
     overlays: the guest reads the backup and its writes go to the overlays
     (its persistent definition keeps naming its own disks);
  3. each disk is copied (libvirt block copy) onto the domain's own disk,
     in its own format, while the guest runs; the guest's writes are copied
     too;
  4. once every copy is in sync the running domain is switched over to its
     own disks, and the exports and overlays are removed.

The domain must be shut off, or --stop shuts it down first (an ACPI request,
then destroy after compute.libvirt.shutdown_timeout). Its disks must have the
sizes of the backup's and no backing file. Its csbs checkpoints are dropped:
the next backup reads every disk whole.

Keep it running until it says it is done: the guest reads the backup through
this process until the switch. Interrupted before the switch (Ctrl-C), it
stops the domain and says which disks hold part of the backup and must be
restored; the domain's definition is never changed.

The repository is read directly (--config, --data-dir or --repository-path)
or through a csbs service, as for csbs mount; libvirtd is reached at
compute.libvirt.uri of the configuration or --libvirt-uri.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if backup == "" {
				return errors.New("give --backup ID (csbs repo ls or csbs backup list name them)")
			}
			if bandwidth < 0 {
				return fmt.Errorf("--bandwidth %g: want MiB/s, 0 for no limit", bandwidth)
			}
			lc, err := libvirtConfig(&o.repo, uri)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			backups, closeAll, err := o.open(ctx, backup, "")
			if err != nil {
				return err
			}
			defer closeAll()
			b := backups[0]
			if b.server == "" {
				return fmt.Errorf("backup %s does not name its server", backup)
			}
			lc.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			d, err := libvirt.New(lc)
			if err != nil {
				return err
			}
			defer d.Close()
			disks := map[string]nbd.Disk{}
			for _, dk := range b.disks {
				disks[dk.volumeID] = nbdDisk(dk)
			}
			out := cmd.ErrOrStderr()
			err = d.InstantRecover(ctx, b.server, libvirt.InstantRecovery{
				Disks: disks, Stop: stop, Bandwidth: uint64(bandwidth * (1 << 20)),
				Progress: instantProgress(out, backup),
			})
			if errors.Is(err, compute.ErrNotFound) {
				return fmt.Errorf("backup %s is of server %s, which is no domain of libvirt %s (instant recovery works on the libvirt driver's domains; csbs restore restores any server)",
					backup, b.server, lc.URI)
			}
			return err
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&backup, "backup", "", "the backup (checkpoint_item id) to start from")
	cmd.Flags().BoolVar(&stop, "stop", false, "shut the domain down first when it is running")
	cmd.Flags().Float64Var(&bandwidth, "bandwidth", 0, "limit each disk's copy to this many MiB/s (0: no limit)")
	cmd.Flags().StringVar(&uri, "libvirt-uri", "", "libvirtd's URI (default: compute.libvirt.uri of the configuration, qemu:///system)")
	cmd.Flags().IntVar(&o.cacheChunks, "cache-chunks", repository.DefaultReaderCache, "chunks kept in memory per disk (reading the repository directly)")
	return cmd
}

// libvirtConfig is the libvirt driver's configuration of csbs serve (its
// file, CSBS_COMPUTE_LIBVIRT_… variables), the URI overridden by uri.
func libvirtConfig(f *repoFlags, uri string) (libvirt.Config, error) {
	var args []string
	if f.dataDir != "" {
		args = append(args, "--data-dir", f.dataDir)
	}
	cfg, err := config.Load(f.config, os.Environ(), args)
	if err != nil {
		return libvirt.Config{}, err
	}
	c := cfg.Compute.Libvirt
	if uri != "" {
		c.URI = uri
	}
	return libvirt.Config{URI: c.URI, DefaultProject: c.DefaultProject, ScratchDir: c.ScratchDir, ShutdownTimeout: c.ShutdownTimeout}, nil
}

// instantProgress prints an instant recovery's steps, the copy's progress
// at most every two seconds.
func instantProgress(w io.Writer, backup string) func(libvirt.InstantProgress) {
	var last time.Time
	return func(p libvirt.InstantProgress) {
		var names []string
		for _, k := range p.Disks {
			names = append(names, k.Target)
		}
		switch p.Phase {
		case libvirt.InstantRunning:
			fmt.Fprintf(w, "domain %s is running from backup %s (disks %s on overlays in %s); copying onto its disks — keep this running\n",
				p.Domain, backup, strings.Join(names, ", "), p.Dir)
		case libvirt.InstantCopying:
			if time.Since(last) < 2*time.Second {
				return
			}
			last = time.Now()
			var parts []string
			for _, k := range p.Disks {
				pct := 0.0
				if k.Total > 0 {
					pct = 100 * float64(k.Done) / float64(k.Total)
				}
				parts = append(parts, fmt.Sprintf("%s %.0f%%", k.Target, pct))
			}
			fmt.Fprintf(w, "copying: %s\n", strings.Join(parts, ", "))
		case libvirt.InstantReady:
			fmt.Fprintf(w, "every disk is in sync; switching the domain over to its disks\n")
		case libvirt.InstantDone:
			var files []string
			for _, k := range p.Disks {
				files = append(files, k.Target+" "+k.File)
			}
			fmt.Fprintf(w, "done: domain %s runs on its own disks (%s); the exports and overlays are removed\n", p.Domain, strings.Join(files, ", "))
		}
	}
}
