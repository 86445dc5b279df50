// Command restore asks a running csbs to restore a backup (found by name)
// onto a server and waits until the restore succeeds, for the benchmark
// scripts: it prints the seconds from sending the restore request to seeing
// the restore succeeded.
//
// Output (one line, for awk):
//
//	seconds 1.234
//
// It exits 1 when the restore fails (printing resources_reason) or when
// -timeout passes first.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/csbs/csbs/internal/client"
)

func main() {
	base := flag.String("url", "http://127.0.0.1:8799", "base URL of csbs")
	project := flag.String("project", "b942cc8342734d15bcb246babb1953cf", "project id")
	name := flag.String("name", "full", "backup_name of the backup to restore")
	server := flag.String("server", "", "target server id")
	volume := flag.String("volume", "", "target disk id (the backup must have one disk)")
	poll := flag.Duration("poll", 5*time.Millisecond, "poll interval")
	timeout := flag.Duration("timeout", 30*time.Minute, "give up after")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	secs, err := restore(ctx, client.New(*base+"/v1/"+*project, ""), *name, *server, *volume, *poll)
	if err != nil {
		fmt.Fprintln(os.Stderr, "restore:", err)
		os.Exit(1)
	}
	fmt.Printf("seconds %.3f\n", secs)
}

func restore(ctx context.Context, c *client.Client, name, server, volume string, poll time.Duration) (float64, error) {
	var items struct {
		Items []struct {
			ID           string `json:"id"`
			CheckpointID string `json:"checkpoint_id"`
			ExtendInfo   struct {
				VolumeBackups []struct {
					ID string `json:"id"`
				} `json:"volume_backups"`
			} `json:"extend_info"`
		} `json:"checkpoint_items"`
	}
	if err := c.Do(ctx, "GET", "/checkpoint_items", url.Values{"name": {name}}, nil, &items); err != nil {
		return 0, err
	}
	if len(items.Items) == 0 || len(items.Items[0].ExtendInfo.VolumeBackups) != 1 {
		return 0, fmt.Errorf("no backup named %q with one disk", name)
	}
	it := items.Items[0]
	body := map[string]any{"restore": map[string]any{
		"provider_id": client.ProviderID, "checkpoint_id": it.CheckpointID,
		"parameters": map[string]any{"checkpoint_item_id": it.ID, "power_on": false, "targets": map[string]any{
			"server_id": server,
			"volumes":   []map[string]string{{"backup_id": it.ExtendInfo.VolumeBackups[0].ID, "volume_id": volume}},
		}},
	}}
	type restoreResp struct {
		Restore struct {
			ID              string            `json:"id"`
			Status          string            `json:"status"`
			ResourcesReason map[string]string `json:"resources_reason"`
		} `json:"restore"`
	}
	start := time.Now()
	var r restoreResp
	if err := c.Do(ctx, "POST", "/restores", nil, body, &r); err != nil {
		return 0, err
	}
	for r.Restore.Status == "in_progress" {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(poll):
		}
		if err := c.Do(ctx, "GET", "/restores/"+r.Restore.ID, nil, nil, &r); err != nil {
			return 0, err
		}
	}
	secs := time.Since(start).Seconds()
	if r.Restore.Status != "success" {
		return 0, fmt.Errorf("restore %s ended %s: %v", r.Restore.ID, r.Restore.Status, r.Restore.ResourcesReason)
	}
	return secs, nil
}
