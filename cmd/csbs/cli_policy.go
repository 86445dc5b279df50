package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/client"
)

func policyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Backup policies: create, list, show, update, delete, execute",
		Long: `Backup policies (scheduled backups with retention), through the API of a
csbs service (connection as for "csbs backup").

create and update take the common settings as flags, or a whole request body
of the API with --file FILE ("-" reads standard input).`,
	}
	c := addConnFlags(cmd)
	cmd.AddCommand(policyCreateCmd(c), policyListCmd(c), policyShowCmd(c), policyUpdateCmd(c),
		policyDeleteCmd(c), policyExecuteCmd(c))
	return cmd
}

// policyFlags are the flags of create and update.
type policyFlags struct {
	file, name, desc, pattern string
	servers                   []string
	maxBackups, days          int
	enabled                   bool
}

func (f *policyFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.file, "file", "", `request body of the API ({"policy": {...}}) from FILE, "-" for standard input`)
	fs.StringVar(&f.name, "name", "", "name of the policy")
	fs.StringVar(&f.desc, "description", "", "description")
	fs.StringArrayVar(&f.servers, "server", nil, "id of a server the policy backs up (repeat for more)")
	fs.StringVar(&f.pattern, "rrule", "", "when to back up, an iCalendar RRULE, e.g. FREQ=DAILY;BYHOUR=2;BYMINUTE=0")
	fs.IntVar(&f.maxBackups, "max-backups", 0, "keep at most this many backups of each server")
	fs.IntVar(&f.days, "retention-days", 0, "keep backups this many days")
	fs.BoolVar(&f.enabled, "enabled", true, "whether the schedule runs")
}

// body is the request body: --file as is, or one made of the flags that
// were set (for update: only those).
func (f *policyFlags) body(cmd *cobra.Command, create bool) (any, error) {
	if f.file != "" {
		var b []byte
		var err error
		if f.file == "-" {
			b, err = readAll(cmd.InOrStdin())
		} else {
			b, err = os.ReadFile(f.file)
		}
		if err != nil {
			return nil, err
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("--file %s: not JSON: %w", f.file, err)
		}
		return v, nil
	}
	set := cmd.Flags().Changed
	p := map[string]any{}
	if create {
		if f.name == "" || len(f.servers) == 0 || f.pattern == "" {
			return nil, fmt.Errorf("policy create needs --name, --server and --rrule (or --file)")
		}
		p["provider_id"] = client.ProviderID
		p["parameters"] = map[string]any{"common": map[string]any{}}
	}
	if set("name") || create {
		p["name"] = f.name
	}
	if set("description") {
		p["description"] = f.desc
	}
	if set("server") {
		res := make([]map[string]any, len(f.servers))
		for i, s := range f.servers {
			res[i] = map[string]any{"id": s, "type": "OS::Nova::Server", "name": s}
		}
		p["resources"] = res
	}
	if set("rrule") || set("max-backups") || set("retention-days") || set("enabled") || create {
		op := map[string]any{"enabled": f.enabled, "operation_type": "backup"}
		def := map[string]any{}
		if f.maxBackups > 0 {
			def["max_backups"] = f.maxBackups
		}
		if f.days > 0 {
			def["retention_duration_days"] = f.days
		}
		if len(def) == 0 && create {
			def["max_backups"] = 7 // the reference requires a retention rule
		}
		op["operation_definition"] = def
		if f.pattern != "" {
			rule := strings.TrimPrefix(f.pattern, "RRULE:")
			op["trigger"] = map[string]any{"properties": map[string]any{
				"pattern": "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:" + rule + "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"}}
		}
		if create {
			op["name"] = f.name
		}
		p["scheduled_operations"] = []any{op}
	}
	return map[string]any{"policy": p}, nil
}

func policyCreateCmd(c *conn) *cobra.Command {
	var f policyFlags
	cmd := &cobra.Command{
		Use:   "create --name N --server ID --rrule RULE [--max-backups N] | --file FILE",
		Short: "Create a backup policy",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			ctx := cmd.Context()
			body, err := f.body(cmd, true)
			if err != nil {
				return err
			}
			var out struct {
				Policy json.RawMessage `json:"policy"`
			}
			if err := cl.Do(ctx, http.MethodPost, "/policies", nil, body, &out); err != nil {
				return err
			}
			return show(cmd.OutOrStdout(), c.output, out.Policy)
		}),
	}
	f.register(cmd)
	return cmd
}

func policyUpdateCmd(c *conn) *cobra.Command {
	var f policyFlags
	cmd := &cobra.Command{
		Use:   "update ID [--name N] [--server ID ...] [--rrule RULE] [--enabled=false] | --file FILE",
		Short: "Change a backup policy (only what is given)",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			body, err := f.body(cmd, false)
			if err != nil {
				return err
			}
			var out struct {
				Policy json.RawMessage `json:"policy"`
			}
			if err := cl.Do(ctx, http.MethodPut, "/policies/"+url.PathEscape(args[0]), nil, body, &out); err != nil {
				return err
			}
			return show(cmd.OutOrStdout(), c.output, out.Policy)
		}),
	}
	f.register(cmd)
	return cmd
}

func policyListCmd(c *conn) *cobra.Command {
	var (
		limit   int
		marker  string
		filters []string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List backup policies",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			ctx := cmd.Context()
			q, err := listQuery(limit, marker, filters)
			if err != nil {
				return err
			}
			var out struct {
				Policies []json.RawMessage `json:"policies"`
			}
			if err := cl.Do(ctx, http.MethodGet, "/policies", q, nil, &out); err != nil {
				return err
			}
			return listTable(cmd.OutOrStdout(), c.output, out.Policies,
				[]string{"ID", "NAME", "STATUS", "CREATED_AT"}, []string{"id", "name", "status", "created_at"})
		}),
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many")
	cmd.Flags().StringVar(&marker, "marker", "", "start after this policy id")
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "any query parameter of the API, e.g. name=daily")
	return cmd
}

func policyShowCmd(c *conn) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a backup policy",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			var out struct {
				Policy json.RawMessage `json:"policy"`
			}
			if err := cl.Do(ctx, http.MethodGet, "/policies/"+url.PathEscape(args[0]), nil, nil, &out); err != nil {
				return err
			}
			return show(cmd.OutOrStdout(), c.output, out.Policy)
		}),
	}
}

func policyDeleteCmd(c *conn) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a backup policy (its backups stay)",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			if err := cl.Do(ctx, http.MethodDelete, "/policies/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy %s deleted\n", args[0])
			return nil
		}),
	}
}

func policyExecuteCmd(c *conn) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "execute ID [--wait]",
		Short: "Back up the policy's servers now",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ctx := cmd.Context()
			in := map[string]any{"checkpoint": map[string]any{"plan_id": args[0], "parameters": map[string]any{}}}
			var out struct {
				Checkpoint json.RawMessage `json:"checkpoint"`
			}
			if err := cl.Do(ctx, http.MethodPost, "/providers/"+client.ProviderID+"/checkpoints", nil, in, &out); err != nil {
				return err
			}
			if !wait {
				return show(cmd.OutOrStdout(), c.output, out.Checkpoint)
			}
			var cp struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(out.Checkpoint, &cp); err != nil {
				return err
			}
			bs, err := cl.Backups(ctx, url.Values{"checkpoint_id": {cp.ID}})
			if err != nil {
				return err
			}
			var raws []json.RawMessage
			var failed []string
			for _, b := range bs {
				done, err := waitBackup(ctx, cl, b.ID)
				if err != nil {
					failed = append(failed, err.Error())
					continue
				}
				raws = append(raws, done.Raw)
			}
			if err := listTable(cmd.OutOrStdout(), c.output, raws,
				[]string{"ID", "NAME", "SERVER", "STATUS", "SIZE_MB"},
				[]string{"id", "name", "resource_id", "status", "extend_info.size"}); err != nil {
				return err
			}
			if len(failed) > 0 {
				return fmt.Errorf("%s", strings.Join(failed, "; "))
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for every backup of the execution to end")
	return cmd
}
