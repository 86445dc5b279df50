package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/client"
)

// keptClonesCmd is the noun for the clones the local compute driver keeps
// between backups (changed-block tracking of image files): what they cost
// and dropping them. An administrator's: with authentication on, the admin
// role is needed.
func keptClonesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kept-clones",
		Short: "The reflink clones kept for changed-block tracking: their cost per server and disk, and dropping them (admin)",
		Long: `With compute.driver local on a file system that clones (XFS with reflink,
Btrfs), the clone read by each disk's last backup is kept until the next
backup of the disk, which then reads only the extents written since. A kept
clone costs what the disk rewrote since (EXCLUSIVE: the space dropping it
frees); APPARENT is its size. Dropping one only makes the next backup of its
disk read the disk whole (its read_reason says so).

The clones are on the disks of the node that answers: in a cluster, point
--endpoint at each node (the answer names it).`,
	}
	c := addConnFlags(cmd)
	var f client.KeptFilter
	selectFlags := func(cmd *cobra.Command) {
		cmd.Flags().StringVar(&f.ServerID, "server", "", "only the clones of this server's disks")
		cmd.Flags().StringVar(&f.VolumeID, "volume", "", "only the clone of this disk")
		cmd.Flags().BoolVar(&f.AllTenants, "all-tenants", false, "every project's, and clones of no known server (admin)")
	}
	list := &cobra.Command{
		Use:   "list [--server ID] [--volume ID] [--all-tenants]",
		Short: "List the kept clones with their apparent and exclusive bytes",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			k, err := cl.KeptClones(cmd.Context(), f)
			if err != nil {
				return err
			}
			return keptTable(cmd.OutOrStdout(), c.output, k, "kept")
		}),
	}
	selectFlags(list)
	var all bool
	drop := &cobra.Command{
		Use:   "drop (--server ID [--volume ID] | --volume ID | --all) [--all-tenants]",
		Short: "Drop kept clones, freeing their exclusive bytes; the next backup of each disk reads it whole",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			if f.ServerID == "" && f.VolumeID == "" && !all {
				return errors.New("name what to drop: --server ID, --volume ID, or --all (every kept clone of the project; of every project with --all-tenants)")
			}
			k, err := cl.DropKeptClones(cmd.Context(), f)
			if err != nil {
				return err
			}
			return keptTable(cmd.OutOrStdout(), c.output, k, "dropped")
		}),
	}
	selectFlags(drop)
	drop.Flags().BoolVar(&all, "all", false, "every kept clone the other flags select")
	cmd.AddCommand(list, drop)
	return cmd
}

// keptTable prints kept clones as a table with a line of totals, or the
// answer as JSON.
func keptTable(w io.Writer, output string, k *client.KeptClones, verb string) error {
	if output == "json" {
		return printJSON(w, k.Raw)
	}
	if err := listTable(w, output, k.Clones,
		[]string{"SERVER", "SERVER_NAME", "VOLUME", "VOLUME_NAME", "BACKUP", "KEPT_AT", "APPARENT_BYTES", "EXCLUSIVE_BYTES", "PATH"},
		[]string{"server_id", "server_name", "volume_id", "volume_name", "backup_id", "kept_at", "apparent_bytes", "exclusive_bytes", "path"}); err != nil {
		return err
	}
	on := ""
	if k.Node != "" {
		on = " on node " + k.Node
	}
	freed := "dropping them frees"
	if verb == "dropped" {
		freed = "freed"
	}
	noun := "clones"
	if k.Count == 1 {
		noun = "clone"
	}
	_, err := fmt.Fprintf(w, "%d %s %s%s: %s apparent, %s exclusive (%s)\n", k.Count, noun, verb, on,
		humanBytes(k.ApparentBytes), humanBytes(k.ExclusiveBytes), freed)
	return err
}

// humanBytes writes n in binary units for people.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
