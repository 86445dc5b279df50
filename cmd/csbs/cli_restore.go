package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/client"
)

func restoreCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore backups onto servers; list, show and wait for restores",
		Long: `Restores of backups, through the API of a csbs service (connection as for
"csbs backup"). The csbs repo commands work on a repository directly instead.`,
	}
	c := addConnFlags(cmd)
	cmd.AddCommand(restoreCreateCmd(c), restoreListCmd(c), restoreShowCmd(c), restoreWaitCmd(c))
	return cmd
}

func restoreCreateCmd(c *conn) *cobra.Command {
	var (
		backup, server string
		volumes        []string
		powerOn, wait  bool
	)
	cmd := &cobra.Command{
		Use:   "create --backup ID [--server ID] [--volume DISK_BACKUP=DISK ...] [--power-on] [--wait]",
		Short: "Restore a backup (by default onto the server it was taken of)",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			ctx := cmd.Context()
			b, err := cl.Backup(ctx, backup)
			if err != nil {
				return err
			}
			req := client.RestoreRequest{CheckpointID: b.CheckpointID, BackupID: b.ID, ServerID: server, PowerOn: powerOn}
			if req.ServerID == "" {
				req.ServerID = b.ResourceID
			}
			for _, v := range volumes {
				from, to, ok := strings.Cut(v, "=")
				if !ok || from == "" || to == "" {
					return fmt.Errorf("--volume %q: want DISK_BACKUP_ID=DISK_ID", v)
				}
				req.Volumes = append(req.Volumes, client.VolumeMapping{BackupID: from, VolumeID: to})
			}
			r, err := cl.CreateRestore(ctx, req)
			if err != nil {
				return err
			}
			if wait {
				if r, err = waitRestore(ctx, cl, r.ID); err != nil {
					return err
				}
			}
			return show(cmd.OutOrStdout(), c.output, r.Raw)
		}),
	}
	cmd.Flags().StringVar(&backup, "backup", "", "id of the backup to restore (required)")
	cmd.Flags().StringVar(&server, "server", "", "server to restore onto (default: the backed-up server)")
	cmd.Flags().StringArrayVar(&volumes, "volume", nil, "write disk backup DISK_BACKUP onto disk DISK (default: disk by disk)")
	cmd.Flags().BoolVar(&powerOn, "power-on", false, "start the server after restoring")
	cmd.Flags().BoolVar(&wait, "wait", false, "return when the restore ends (non-zero exit when it fails)")
	cmd.MarkFlagRequired("backup")
	return cmd
}

func restoreListCmd(c *conn) *cobra.Command {
	var (
		limit          int
		marker, status string
	)
	cmd := &cobra.Command{
		Use:   "list [--status in_progress|success|fail]",
		Short: "List restores",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			ctx := cmd.Context()
			q, err := listQuery(limit, marker, nil)
			if err != nil {
				return err
			}
			if status != "" {
				q.Set("status", status)
			}
			rs, err := cl.Restores(ctx, q)
			if err != nil {
				return err
			}
			raws := make([]json.RawMessage, len(rs))
			for i, r := range rs {
				raws[i] = r.Raw
			}
			return listTable(cmd.OutOrStdout(), c.output, raws,
				[]string{"ID", "BACKUP", "SERVER", "STATUS", "CREATED_AT"},
				[]string{"id", "parameters.checkpoint_item_id", "parameters.targets.server_id", "status", "created_at"})
		}),
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many")
	cmd.Flags().StringVar(&marker, "marker", "", "start after this restore id")
	cmd.Flags().StringVar(&status, "status", "", "only restores in this status")
	return cmd
}

func restoreShowCmd(c *conn) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a restore",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			r, err := cl.Restore(ctx, args[0])
			if err != nil {
				return err
			}
			return show(cmd.OutOrStdout(), c.output, r.Raw)
		}),
	}
}

func restoreWaitCmd(c *conn) *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID",
		Short: "Wait until a restore ends (non-zero exit when it fails)",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			r, err := waitRestore(ctx, cl, args[0])
			if err != nil {
				return err
			}
			return show(cmd.OutOrStdout(), c.output, r.Raw)
		}),
	}
}

// waitRestore polls a restore until it ends. A restore reports no
// percentage, so the display shows its status and the time taken.
func waitRestore(ctx context.Context, cl *client.Client, id string) (*client.Restore, error) {
	p := newProgress("restore " + id)
	for {
		r, err := cl.Restore(ctx, id)
		if err != nil {
			return nil, err
		}
		switch r.Status {
		case "in_progress":
			p.update(r.Status, 0, -1)
		case "fail":
			p.done("fail")
			reasons := make([]string, 0, len(r.ResourcesReason))
			for _, k := range sortedKeys(r.ResourcesReason) {
				reasons = append(reasons, k+": "+r.ResourcesReason[k])
			}
			return nil, fmt.Errorf("restore %s failed: %s", r.ID, strings.Join(reasons, "; "))
		default:
			p.done(r.Status)
			return r, nil
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return nil, err
		}
	}
}
