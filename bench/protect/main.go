// Command protect asks a running csbs for a backup of one server and waits
// until it is available, for the benchmark scripts: it prints the seconds
// from sending the protect request to seeing the item available, then the
// item's extend_info.
//
// Output (two lines, for awk):
//
//	seconds 12.345
//	extend_info {...}
//
// It exits 1 when the backup ends in error (printing fail_reason) or when
// -timeout passes first.
package main

import (
	"context"
	"encoding/json"
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
	server := flag.String("server", "9506416d-db6c-406e-8bca-c0f43793d914", "server id")
	name := flag.String("name", "bench", "backup_name")
	incr := flag.Bool("incremental", false, `send "incremental": true`)
	poll := flag.Duration("poll", 20*time.Millisecond, "poll interval")
	timeout := flag.Duration("timeout", 30*time.Minute, "give up after")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c := client.New(*base+"/v1/"+*project, "")
	secs, info, err := protect(ctx, c, *server, *name, *incr, *poll)
	if err != nil {
		fmt.Fprintln(os.Stderr, "protect:", err)
		os.Exit(1)
	}
	fmt.Printf("seconds %.3f\nextend_info %s\n", secs, info)
}

// protect sends the request and polls the checkpoint's item until it is
// available; it returns the elapsed seconds and the item's extend_info.
func protect(ctx context.Context, c *client.Client, server, name string, incr bool, poll time.Duration) (float64, json.RawMessage, error) {
	p := map[string]any{"backup_name": name}
	if incr {
		p["incremental"] = true
	}
	start := time.Now()
	var cp struct {
		Checkpoint struct {
			ID string `json:"id"`
		} `json:"checkpoint"`
	}
	if err := c.Do(ctx, "POST", "/providers/"+client.ProviderID+"/resources/"+server+"/action", nil, map[string]any{"protect": p}, &cp); err != nil {
		return 0, nil, err
	}
	var itemID string
	for {
		if itemID == "" {
			var l struct {
				Items []struct {
					ID string `json:"id"`
				} `json:"checkpoint_items"`
			}
			if err := c.Do(ctx, "GET", "/checkpoint_items", url.Values{"checkpoint_id": {cp.Checkpoint.ID}}, nil, &l); err != nil {
				return 0, nil, err
			}
			if len(l.Items) > 0 {
				itemID = l.Items[0].ID
			}
		}
		if itemID != "" {
			var it struct {
				Item struct {
					Status     string          `json:"status"`
					ExtendInfo json.RawMessage `json:"extend_info"`
				} `json:"checkpoint_item"`
			}
			if err := c.Do(ctx, "GET", "/checkpoint_items/"+itemID, nil, nil, &it); err != nil {
				return 0, nil, err
			}
			switch it.Item.Status {
			case "available":
				return time.Since(start).Seconds(), it.Item.ExtendInfo, nil
			case "error":
				var f struct {
					FailReason string `json:"fail_reason"`
				}
				json.Unmarshal(it.Item.ExtendInfo, &f)
				return 0, nil, fmt.Errorf("backup %s failed: %s", itemID, f.FailReason)
			}
		}
		select {
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("backup of checkpoint %s not available in time: %w", cp.Checkpoint.ID, ctx.Err())
		case <-time.After(poll):
		}
	}
}
