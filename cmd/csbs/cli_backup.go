package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/client"
)

// pollEvery is how often --wait asks for the status of a job.
const pollEvery = time.Second

func backupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Create, list, show, wait for, delete and verify backups of servers",
		Long: `Backups of servers, through the API of a csbs service.

Connect with CSBS_ENDPOINT and CSBS_PROJECT_ID (and CSBS_TOKEN), or with the
OpenStack variables OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_ID or
OS_PROJECT_NAME (and OS_USER_DOMAIN_NAME, OS_REGION_NAME); each has a flag.`,
	}
	c := addConnFlags(cmd)
	cmd.AddCommand(backupCreateCmd(c), backupListCmd(c), backupShowCmd(c), backupDeleteCmd(c), backupWaitCmd(c),
		backupVerifyCmd(c), backupDamagedCmd(c))
	return cmd
}

func backupCreateCmd(c *conn) *cobra.Command {
	var (
		server, name, desc string
		full, wait         bool
	)
	cmd := &cobra.Command{
		Use:   "create --server ID --name NAME [--wait]",
		Short: "Back up a server (all its disks)",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			ctx := cmd.Context()
			req := client.ProtectRequest{Name: name, Description: desc}
			if full {
				f := false
				req.Incremental = &f
			}
			b, err := cl.CreateBackup(ctx, server, req)
			if err != nil {
				return err
			}
			if wait {
				if b, err = waitBackup(ctx, cl, b.ID); err != nil {
					return err
				}
			}
			return printBackup(cmd, c.output, b)
		}),
	}
	cmd.Flags().StringVar(&server, "server", "", "id of the server to back up (required)")
	cmd.Flags().StringVar(&name, "name", "", "name of the backup (required)")
	cmd.Flags().StringVar(&desc, "description", "", "description of the backup")
	cmd.Flags().BoolVar(&full, "full", false, "take a full backup even when an incremental one is possible")
	cmd.Flags().BoolVar(&wait, "wait", false, "show progress and return when the backup ends (non-zero exit when it fails)")
	cmd.MarkFlagRequired("server")
	cmd.MarkFlagRequired("name")
	return cmd
}

func backupListCmd(c *conn) *cobra.Command {
	var (
		limit          int
		marker, status string
		server         string
		filters        []string
	)
	cmd := &cobra.Command{
		Use:   "list [--status S] [--server ID] [--filter KEY=VALUE ...]",
		Short: "List backups, newest first",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			ctx := cmd.Context()
			q, err := listQuery(limit, marker, filters)
			if err != nil {
				return err
			}
			if status != "" {
				q.Set("status", status)
			}
			if server != "" {
				q.Set("resource_id", server)
			}
			bs, err := cl.Backups(ctx, q)
			if err != nil {
				return err
			}
			raws := make([]json.RawMessage, len(bs))
			for i, b := range bs {
				raws[i] = b.Raw
			}
			return listTable(cmd.OutOrStdout(), c.output, raws,
				[]string{"ID", "NAME", "SERVER", "STATUS", "PROGRESS", "SIZE_MB", "INCREMENTAL", "CREATED_AT"},
				[]string{"id", "name", "extend_info.resource_name", "status", "extend_info.progress", "extend_info.size", "extend_info.incremental", "created_at"})
		}),
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many (default: the service's, 1000)")
	cmd.Flags().StringVar(&marker, "marker", "", "start after this backup id")
	cmd.Flags().StringVar(&status, "status", "", "only backups in this status")
	cmd.Flags().StringVar(&server, "server", "", "only backups of this server")
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "any query parameter of the API, e.g. sort=created_at:asc")
	return cmd
}

func backupShowCmd(c *conn) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a backup (a checkpoint id holding one backup also works)",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			b, err := cl.Backup(ctx, args[0])
			if err != nil {
				return err
			}
			return printBackup(cmd, c.output, b)
		}),
	}
}

func backupDeleteCmd(c *conn) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a backup",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			b, err := cl.Backup(ctx, args[0])
			if err != nil {
				return err
			}
			if err := cl.DeleteBackup(ctx, b.CheckpointID, b.ID); err != nil {
				return err
			}
			if !wait {
				fmt.Fprintf(cmd.OutOrStdout(), "backup %s is being deleted\n", b.ID)
				return nil
			}
			for {
				if _, err := cl.Backup(ctx, b.ID); client.IsNotFound(err) {
					fmt.Fprintf(cmd.OutOrStdout(), "backup %s deleted\n", b.ID)
					return nil
				} else if err != nil {
					return err
				}
				if err := sleep(ctx, pollEvery); err != nil {
					return err
				}
			}
		}),
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "return once the backup is gone")
	return cmd
}

func backupWaitCmd(c *conn) *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID",
		Short: "Show the progress of a backup until it ends (non-zero exit when it fails)",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			b, err := waitBackup(ctx, cl, args[0])
			if err != nil {
				return err
			}
			return printBackup(cmd, c.output, b)
		}),
	}
}

// waitBackup polls a backup until it is no longer being created, showing
// its progress. A backup that ends in error is an error naming the reason.
func waitBackup(ctx context.Context, cl *client.Client, id string) (*client.Backup, error) {
	p := newProgress("backup " + id)
	for {
		b, err := cl.Backup(ctx, id)
		if err != nil {
			return nil, err
		}
		switch b.Status {
		case "waiting_protect", "protecting":
			p.update(b.Status, b.ExtendInfo.Progress, b.ExtendInfo.ReadBytes)
		case "error":
			p.done("error")
			return nil, fmt.Errorf("backup %s failed: %s", b.ID, b.ExtendInfo.FailReason)
		default:
			p.done(b.Status)
			return b, nil
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return nil, err
		}
	}
}

func printBackup(cmd *cobra.Command, output string, b *client.Backup) error {
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), b.Raw)
	}
	kv := [][2]string{
		{"id", b.ID}, {"name", b.Name}, {"checkpoint_id", b.CheckpointID}, {"server", b.ResourceID},
		{"server_name", b.ExtendInfo.ResourceName}, {"status", b.Status},
		{"progress", fmt.Sprintf("%d%%", b.ExtendInfo.Progress)}, {"size_mb", fmt.Sprint(b.ExtendInfo.Size)},
		{"incremental", fmt.Sprint(b.ExtendInfo.Incremental)}, {"created_at", b.CreatedAt},
	}
	if b.ExtendInfo.FailReason != "" {
		kv = append(kv, [2]string{"fail_reason", b.ExtendInfo.FailReason})
	}
	return keyValues(cmd.OutOrStdout(), kv)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
