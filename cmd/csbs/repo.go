package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/config"
	"github.com/csbs/csbs/internal/repository"
)

// repoFlags locate a repository: explicitly, or through the configuration
// that csbs serve uses.
type repoFlags struct {
	config       string
	dataDir      string
	path         string
	url          string
	passwordFile string
}

func (f *repoFlags) register(cmd *cobra.Command) {
	fl := cmd.PersistentFlags()
	fl.StringVar(&f.config, "config", "", "configuration file of csbs serve (for the defaults of the flags below and the repository.s3 keys)")
	fl.StringVar(&f.dataDir, "data-dir", "", "data_dir of csbs serve (default from the configuration: ./csbs-data)")
	fl.StringVar(&f.path, "repository-path", "", "repository directory (default: repository.url of the configuration, data_dir/repository)")
	fl.StringVar(&f.url, "repository-url", "", "repository URL, file:///path or s3://bucket/prefix (default: repository.url of the configuration)")
	fl.StringVar(&f.passwordFile, "password-file", "", "file holding the repository password (default: repository.password_file, data_dir/repository.key)")
}

// with runs fn on the repository, opened for the length of fn, under a
// context that ends on SIGINT or SIGTERM.
func (f *repoFlags) with(fn func(ctx context.Context, repo *repository.Repository) error) error {
	ctx, stop := signalContext()
	defer stop()
	repo, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer repo.Close()
	return fn(ctx, repo)
}

// open opens the repository. It needs nothing but the repository and its
// password: no database, no running service. An s3:// repository also
// takes the repository.s3 keys (endpoint, region, credentials) of the
// configuration or the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
// environment.
func (f *repoFlags) open(ctx context.Context) (*repository.Repository, error) {
	if f.path != "" && f.url != "" {
		return nil, errors.New("give --repository-path or --repository-url, not both")
	}
	// The flags override the configuration's repository.url and path (both,
	// so that neither conflicts with the other).
	rc := config.Repository{URL: "file://" + f.path}
	pwFile := f.passwordFile
	if f.path == "" || pwFile == "" {
		var args []string
		if f.dataDir != "" {
			args = append(args, "--data-dir", f.dataDir)
		}
		switch {
		case f.path != "":
			args = append(args, "--repository-url", "file://"+f.path, "--repository-path", f.path)
		case f.url != "":
			args = append(args, "--repository-url", f.url, "--repository-path", "")
		}
		cfg, err := config.Load(f.config, os.Environ(), args)
		if err != nil {
			return nil, fmt.Errorf("%w (or give --repository-path and --password-file)", err)
		}
		rc = cfg.Repository
		if pwFile == "" {
			pwFile = cfg.Repository.PasswordFile
		}
	}
	pw := []byte(os.Getenv(passwordEnv))
	if len(bytes.TrimSpace(pw)) == 0 {
		var err error
		if pw, err = os.ReadFile(pwFile); err != nil {
			return nil, fmt.Errorf("read repository password (or set $%s): %w", passwordEnv, err)
		}
	} else {
		pwFile = "$" + passwordEnv
	}
	repo, _, err := openRepo(ctx, rc, []byte(strings.TrimSpace(string(pw))), false)
	if errors.Is(err, repository.ErrWrongPassword) {
		return nil, fmt.Errorf("repository %s: the password in %s does not open it", rc.URL, pwFile)
	}
	return repo, err
}

func repoCmd() *cobra.Command {
	var f repoFlags
	cmd := &cobra.Command{
		Use:   "repo",
		Short: "Work on a backup repository directly: list, verify, repair, restore, collect garbage",
		Long: `Work on a backup repository with nothing but the repository and its password
file: no database and no running service are needed, so these commands also
recover backups when the database is lost.

The repository is found through --repository-path (or --repository-url) and
--password-file, or else through the configuration csbs serve uses (--config,
CSBS_… variables, --data-dir). An s3:// repository takes its endpoint, region
and credentials from the repository.s3 keys of that configuration or from
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.`,
	}
	f.register(cmd)
	cmd.AddCommand(repoLsCmd(&f), repoVerifyCmd(&f), repoRestoreCmd(&f), repoGCCmd(&f), repoRepairCmd(&f))
	return cmd
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

func repoLsCmd(f *repoFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the backups in the repository, oldest first, with their disks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.with(func(ctx context.Context, repo *repository.Repository) error {
				snaps, err := repo.Snapshots(ctx)
				if err != nil {
					return fmt.Errorf("%w (csbs repo verify names the damage)", err)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "SNAPSHOT\tTIME\tBACKUP ID\tBACKUP NAME\tSERVER ID\tSERVER NAME")
				for _, s := range snaps {
					m := s.Meta
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Time.UTC().Format(time.RFC3339),
						dash(m["item_id"]), dash(m["backup_name"]), dash(m["server_id"]), dash(m["server_name"]))
					for _, v := range s.Volumes {
						fmt.Fprintf(w, "  disk %s\t%s\t%d bytes\t\t\t\n", v.VolumeID, dash(v.Name), v.Size)
					}
				}
				return w.Flush()
			})
		},
	}
}

func repoGCCmd(f *repoFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove the data no backup references; safe beside csbs serve",
		Long: `Collect garbage in two phases: mark the packs no backup references as
deleted, and remove the packs an earlier run marked once every backup, restore
and verify that began before the mark has ended (plus a margin of 5 minutes).
It runs beside csbs serve on any host and waits for nothing: no backup or
restore waits for it either. Space of backups deleted just before is freed by
a second run 5 minutes later. When another garbage collection is running on
the repository it exits with an error; run it again later.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.with(func(ctx context.Context, repo *repository.Repository) error {
				start := time.Now()
				st, err := repo.GC(ctx)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "removed %d packs, %d bytes freed; marked %d packs deleted (%d of them rewritten first) in %.1fs\n",
					st.PacksDeleted, st.BytesFreed, st.PacksMarked, st.PacksRewritten, time.Since(start).Seconds())
				if st.PacksPending > 0 {
					fmt.Fprintf(out, "%d packs wait (garbage younger than the margin, or marked while operations ran); run again in %v\n",
						st.PacksPending, repo.GCMargin())
				}
				return nil
			})
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func repoVerifyCmd(f *repoFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Re-read and authenticate everything; name the backups any damage affects",
		Long: `Re-read every pack, authenticate every chunk, check every backup's manifest,
and print which backups any damage affects. Exits non-zero when anything is
damaged or missing. It can run beside csbs serve (on any host): it holds a
lease in the repository, so no garbage collection removes what it reads.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.with(func(ctx context.Context, repo *repository.Repository) error {
				start := time.Now()
				rep, err := repo.Verify(ctx)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "checked %d packs, %d chunks, %d bytes, %d backups in %.1fs\n",
					rep.Packs, rep.Chunks, rep.Bytes, rep.Snapshots, time.Since(start).Seconds())
				if rep.OK() {
					fmt.Fprintln(out, "no damage found")
					return nil
				}
				fmt.Fprintf(out, "\n%d problems:\n", len(rep.Problems))
				for _, p := range rep.Problems {
					fmt.Fprintln(out, "  "+p)
				}
				if len(rep.AffectedSnapshots) > 0 {
					fmt.Fprintf(out, "\nbackups affected (they cannot be restored whole):\n")
					w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "  SNAPSHOT\tBACKUP ID\tBACKUP NAME\tSERVER ID\tSERVER NAME")
					for _, id := range rep.AffectedSnapshots {
						s, err := repo.LoadSnapshot(ctx, id)
						if err != nil {
							fmt.Fprintf(w, "  %s\t(manifest unreadable)\t\t\t\n", id)
							continue
						}
						m := s.Meta
						fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", id, dash(m["item_id"]), dash(m["backup_name"]), dash(m["server_id"]), dash(m["server_name"]))
					}
					w.Flush()
				}
				return fmt.Errorf("repository damaged: %d problems, %d backups affected", len(rep.Problems), len(rep.AffectedSnapshots))
			})
		},
	}
}

func repoRepairCmd(f *repoFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "repair",
		Short: "Rebuild lost index files from pack trailers, drop quarantined copies from the index, name the backups that stay incomplete",
		Long: `Index again, from the trailer every pack carries, the packs that no readable
index file lists (index files lost or damaged); rewrite the index files that
are damaged or still name quarantined (damaged) chunk copies without them; and
print the backups that still cannot be restored whole, with the disks and
offsets they lack. They stay incomplete until a backup of a server holding the
data stores it again. Exits non-zero while any backup is incomplete.

It reads no chunk: run csbs repo verify first to find (and quarantine) damage
inside packs. It runs beside csbs serve; while a garbage collection runs on
the repository it exits with an error (run it again later).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.with(func(ctx context.Context, repo *repository.Repository) error {
				rep, err := repo.Repair(ctx)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "indexed %d packs again from their trailers; rewrote %d index files; %d quarantined copies left out of the index\n",
					len(rep.ReindexedPacks), rep.IndexFilesRewritten, rep.Quarantined)
				if rep.YoungPacks > 0 {
					fmt.Fprintf(out, "%d packs without index file are younger than the GC margin (%v) and may be a running backup's: run repair again later to index them\n",
						rep.YoungPacks, repo.GCMargin())
				}
				for _, p := range rep.UnreadablePacks {
					fmt.Fprintf(out, "pack %s has no readable index file and its trailer cannot be read: garbage collection moves it to damaged/\n", p)
				}
				if len(rep.Incomplete) == 0 {
					fmt.Fprintf(out, "all %d backups are complete\n", rep.Snapshots)
					return nil
				}
				fmt.Fprintf(out, "\nbackups that stay incomplete until their data is stored again:\n")
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "  SNAPSHOT\tBACKUP ID\tBACKUP NAME\tSERVER ID\tWHAT CANNOT BE RESTORED")
				for _, d := range rep.Incomplete {
					what := "its manifest is damaged"
					if !d.Unreadable {
						var parts []string
						for _, v := range d.Volumes {
							parts = append(parts, fmt.Sprintf("disk %s at offsets %s", v.VolumeID, repository.FormatOffsets(v.Offsets, 5)))
						}
						what = strings.Join(parts, "; ")
					}
					var m map[string]string
					if s, err := repo.LoadSnapshot(ctx, d.Snapshot); err == nil {
						m = s.Meta
					}
					fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", d.Snapshot, dash(m["item_id"]), dash(m["backup_name"]), dash(m["server_id"]), what)
				}
				w.Flush()
				return fmt.Errorf("%d of %d backups are incomplete", len(rep.Incomplete), rep.Snapshots)
			})
		},
	}
}

func repoRestoreCmd(f *repoFlags) *cobra.Command {
	var volume, target, targetDir string
	var sum bool
	cmd := &cobra.Command{
		Use:   "restore BACKUP --target FILE|DEVICE [--volume DISK] | --target-dir DIR",
		Short: "Write the disks of a backup back to files or block devices",
		Long: `Write a disk of a backup (a snapshot id or a backup id, as csbs repo ls lists
them) to a file or block device, or every disk to DIR/<disk id>.img.

Every chunk is authenticated before it is written. A file no larger than the
disk is replaced; a larger file or device keeps its size and the bytes beyond
the disk; holes and zero blocks of the backup read as zeros.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (target == "") == (targetDir == "") {
				return errors.New("give exactly one of --target and --target-dir")
			}
			return f.with(func(ctx context.Context, repo *repository.Repository) error {
				snap, err := repo.LoadSnapshot(ctx, strings.ReplaceAll(args[0], "-", ""))
				if errors.Is(err, repository.ErrNotFound) {
					return fmt.Errorf("no backup %s in the repository (csbs repo ls lists them)", args[0])
				}
				if err != nil {
					return err
				}
				vols := snap.Volumes
				if target != "" {
					switch {
					case volume != "":
						i := -1
						for j := range vols {
							if vols[j].VolumeID == volume {
								i = j
							}
						}
						if i < 0 {
							return fmt.Errorf("backup %s has no disk %s; its disks: %s", args[0], volume, diskIDs(vols))
						}
						vols = vols[i : i+1]
					case len(vols) != 1:
						return fmt.Errorf("backup %s has %d disks (%s): choose one with --volume, or use --target-dir", args[0], len(vols), diskIDs(vols))
					}
				}
				for i := range vols {
					vm := &vols[i]
					path := target
					if targetDir != "" {
						path = filepath.Join(targetDir, vm.VolumeID+".img")
					}
					if err := restoreToPath(ctx, repo, vm, path, sum, cmd.OutOrStdout()); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&volume, "volume", "", "the disk (its source disk id) to restore; needed when the backup has several")
	cmd.Flags().StringVar(&target, "target", "", "file or block device to write the disk to (a file is created when missing)")
	cmd.Flags().BoolVar(&sum, "sha256", false, "read each restored disk back and print its SHA-256")
	cmd.Flags().StringVar(&targetDir, "target-dir", "", "directory to write every disk of the backup to, as <disk id>.img")
	return cmd
}

func diskIDs(vols []repository.VolumeManifest) string {
	ids := make([]string, len(vols))
	for i, v := range vols {
		ids[i] = v.VolumeID
	}
	return strings.Join(ids, ", ")
}

// restoreToPath writes vm to path and syncs it; with sum it reads the
// disk's bytes back and prints their SHA-256.
func restoreToPath(ctx context.Context, repo *repository.Repository, vm *repository.VolumeManifest, path string, sum bool, out io.Writer) error {
	dst, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer dst.Close()
	start := time.Now()
	if err := repo.RestoreVolume(ctx, vm, dst, nil); err != nil {
		return err
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("restore to %s: %w", path, err)
	}
	secs := time.Since(start).Seconds()
	fmt.Fprintf(out, "restored disk %s (%d bytes) to %s in %.1fs (%.0f MB/s)\n",
		vm.VolumeID, vm.Size, path, secs, float64(vm.Size)/1e6/max(secs, 1e-9))
	if sum {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(dst, 0, vm.Size)); err != nil {
			return fmt.Errorf("read back %s: %w", path, err)
		}
		fmt.Fprintf(out, "sha256 %s  %s\n", hex.EncodeToString(h.Sum(nil)), path)
	}
	return dst.Close()
}
