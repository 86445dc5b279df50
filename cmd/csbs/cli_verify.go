package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/client"
)

func backupVerifyCmd(c *conn) *cobra.Command {
	var (
		maxAge     string
		allTenants bool
	)
	cmd := &cobra.Command{
		Use:   "verify [ID ...] [--max-age DURATION] [--all-tenants]",
		Short: "Verify backups now: read and authenticate their data, record whether they are damaged (admin)",
		Long: `Ask the service to verify backups now: every chunk a backup references is read
from the repository, authenticated and re-hashed. Damaged data is quarantined,
so the next backup of a server holding it stores it again; each backup's
outcome is recorded (extend_info.verified_at, extend_info.damaged).

Without IDs every backup of the project is verified (of every project with
--all-tenants), or with --max-age only those not verified within it. The
command returns when the verification is done and exits non-zero when a
backup is damaged. With authentication on, the admin role is needed.`,
		RunE: c.run(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			r, err := cl.Verify(cmd.Context(), args, maxAge, allTenants)
			if err != nil {
				return err
			}
			if c.output == "json" {
				if err := printJSON(cmd.OutOrStdout(), r.Raw); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "verified %d backups, %d bytes in %.1fs (%.1f MB/s); %d damaged, %d damaged copies quarantined\n",
					r.Verified, r.Bytes, r.Seconds, float64(r.Bytes)/max(r.Seconds, 1e-9)/1e6, r.Damaged, r.Quarantined)
				if r.Damaged > 0 {
					if err := damagedTable(cmd, c.output, r.Results, true); err != nil {
						return err
					}
				}
			}
			if r.Damaged > 0 {
				return fmt.Errorf("%d backups are damaged", r.Damaged)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&maxAge, "max-age", "", "only backups not verified within this long, e.g. 24h (default: every backup)")
	cmd.Flags().BoolVar(&allTenants, "all-tenants", false, "backups of every project (admin)")
	return cmd
}

func backupDamagedCmd(c *conn) *cobra.Command {
	var allTenants bool
	cmd := &cobra.Command{
		Use:   "damaged [--all-tenants]",
		Short: "List the backups whose last verification found them damaged, with what cannot be restored",
		Args:  cobra.NoArgs,
		RunE: c.run(func(cmd *cobra.Command, _ []string, cl *client.Client) error {
			vs, err := cl.Verifications(cmd.Context(), true, allTenants)
			if err != nil {
				return err
			}
			return damagedTable(cmd, c.output, vs, false)
		}),
	}
	cmd.Flags().BoolVar(&allTenants, "all-tenants", false, "backups of every project (admin)")
	return cmd
}

// damagedTable lists verifications (only the damaged ones when
// onlyDamaged) as a table, or as JSON.
func damagedTable(cmd *cobra.Command, output string, vs []json.RawMessage, onlyDamaged bool) error {
	if onlyDamaged {
		var keep []json.RawMessage
		for _, raw := range vs {
			var v struct {
				Damaged bool `json:"damaged"`
			}
			if json.Unmarshal(raw, &v) == nil && v.Damaged {
				keep = append(keep, raw)
			}
		}
		vs = keep
	}
	return listTable(cmd.OutOrStdout(), output, vs,
		[]string{"BACKUP", "PROJECT", "VERIFIED_AT", "REASON"},
		[]string{"checkpoint_item_id", "project_id", "verified_at", "damage_reason"})
}
