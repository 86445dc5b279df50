package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/client"
)

func tagCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tag",
		Short: "Tags of backups (--backup ID) and of policies (--policy ID)",
		Long: `Tags of backups and policies, through the API of a csbs service (connection
as for "csbs backup"). Without --backup or --policy, list shows every tag the
project's backups (or, with --policies, policies) carry.`,
	}
	c := addConnFlags(cmd)
	var backup, policy string
	var policies bool
	cmd.PersistentFlags().StringVar(&backup, "backup", "", "the backup whose tags to work on")
	cmd.PersistentFlags().StringVar(&policy, "policy", "", "the policy whose tags to work on")
	cmd.PersistentFlags().BoolVar(&policies, "policies", false, "list: the tags of the project's policies")
	// base is the path of the resource's tags, or of the project's kind.
	base := func(needResource bool) (string, error) {
		switch {
		case backup != "" && policy != "":
			return "", errors.New("give --backup or --policy, not both")
		case backup != "":
			return "/csbs_backup/" + url.PathEscape(backup), nil
		case policy != "":
			return "/csbs_backup_policy/" + url.PathEscape(policy), nil
		case needResource:
			return "", errors.New("which resource? give --backup ID or --policy ID")
		case policies:
			return "/csbs_backup_policy", nil
		}
		return "/csbs_backup", nil
	}

	list := &cobra.Command{
		Use:   "list [--backup ID | --policy ID | --policies]",
		Short: "List tags",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			ctx := cmd.Context()
			p, err := base(false)
			if err != nil {
				return err
			}
			var out struct {
				Tags []json.RawMessage `json:"tags"`
			}
			if err := cl.Do(ctx, http.MethodGet, p+"/tags", nil, nil, &out); err != nil {
				return err
			}
			if backup == "" && policy == "" {
				return listTable(cmd.OutOrStdout(), c.output, out.Tags, []string{"KEY", "VALUES"}, []string{"key", "values"})
			}
			return listTable(cmd.OutOrStdout(), c.output, out.Tags, []string{"KEY", "VALUE"}, []string{"key", "value"})
		}),
	}
	add := &cobra.Command{
		Use:   "add (--backup ID | --policy ID) KEY=VALUE ...",
		Short: "Add tags (a key already there gets the new value)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return tagBatch(cmd, c, base, "create", args)
		},
	}
	del := &cobra.Command{
		Use:   "delete (--backup ID | --policy ID) KEY ...",
		Short: "Remove tags by key",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return tagBatch(cmd, c, base, "delete", args)
		},
	}
	cmd.AddCommand(list, add, del)
	return cmd
}

// tagBatch sends the batch action of the reference (create or delete).
func tagBatch(cmd *cobra.Command, c *conn, base func(bool) (string, error), action string, args []string) error {
	ctx := cmd.Context()
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	p, err := base(true)
	if err != nil {
		return err
	}
	tags := make([]map[string]string, 0, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if action == "create" && !ok {
			return fmt.Errorf("tag %q: want KEY=VALUE", a)
		}
		t := map[string]string{"key": k}
		if ok {
			t["value"] = v
		}
		tags = append(tags, t)
	}
	in := map[string]any{"action": action, "tags": tags}
	if err := cl.Do(ctx, http.MethodPost, p+"/tags/action", nil, in, nil); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%d tag(s): %s done\n", len(tags), action)
	return nil
}

func quotaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quota",
		Short: "Show the project's quotas and their use",
		Args:  cobra.NoArgs,
	}
	c := addConnFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		cl, err := c.client(ctx)
		if err != nil {
			return err
		}
		var out struct {
			Quotas struct {
				Resources []json.RawMessage `json:"resources"`
			} `json:"quotas"`
		}
		if err := cl.Do(ctx, http.MethodGet, "/quotas", nil, nil, &out); err != nil {
			return err
		}
		return listTable(cmd.OutOrStdout(), c.output, out.Quotas.Resources,
			[]string{"TYPE", "USED", "QUOTA", "UNIT"}, []string{"type", "used", "quota", "unit"})
	}
	return cmd
}

func jobCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Jobs (operation logs): what backups, restores and deletes did, and why they failed",
	}
	c := addConnFlags(cmd)
	var (
		limit                  int
		marker, status, opType string
	)
	list := &cobra.Command{
		Use:   "list [--status S] [--type backup|restore|delete]",
		Short: "List jobs, newest first",
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
			if opType != "" {
				q.Set("operation_type", opType)
			}
			var out struct {
				Logs []json.RawMessage `json:"operation_logs"`
			}
			if err := cl.Do(ctx, http.MethodGet, "/operation_logs", q, nil, &out); err != nil {
				return err
			}
			return listTable(cmd.OutOrStdout(), c.output, out.Logs,
				[]string{"ID", "TYPE", "STATUS", "BACKUP", "CREATED_AT", "ERROR"},
				[]string{"id", "operation_type", "status", "checkpoint_item_id", "created_at", "error_info"})
		}),
	}
	list.Flags().IntVar(&limit, "limit", 0, "at most this many")
	list.Flags().StringVar(&marker, "marker", "", "start after this job id")
	list.Flags().StringVar(&status, "status", "", "only jobs in this status")
	list.Flags().StringVar(&opType, "type", "", "only jobs of this operation type")
	showCmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a job",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			var out struct {
				Log json.RawMessage `json:"operation_log"`
			}
			if err := cl.Do(ctx, http.MethodGet, "/operation_logs/"+url.PathEscape(args[0]), nil, nil, &out); err != nil {
				return err
			}
			return show(cmd.OutOrStdout(), c.output, out.Log)
		}),
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete the record of a failed job",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			if err := cl.Do(ctx, http.MethodDelete, "/operation_logs/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job %s deleted\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(list, showCmd, del)
	return cmd
}

func readAll(r io.Reader) ([]byte, error) { return io.ReadAll(io.LimitReader(r, 1<<20)) }
