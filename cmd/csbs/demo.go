package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/config"
)

// The ids of the seed page's example request, so that it works verbatim.
const (
	demoProject = "b942cc8342734d15bcb246babb1953cf"
	demoServer  = "9506416d-db6c-406e-8bca-c0f43793d914"
)

func demoCmd() *cobra.Command {
	var dir, listen string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Serve csbs on a demo server whose disk images it creates",
		Long: `Create (once) a demo directory with two disk images of a demo server, an
inventory naming them and a data directory, then serve the API on embedded
defaults (SQLite, local repository) and print how to back the server up.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			inv, err := makeDemo(dir)
			if err != nil {
				return err
			}
			cfg, err := config.Load("", nil, []string{
				"--listen", listen, "--data-dir", filepath.Join(dir, "data"), "--compute-inventory", inv,
			})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return serve(ctx, cfg, func(addr string) { printDemo(cmd.OutOrStdout(), addr) })
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "./csbs-demo", "where the demo's disks, inventory and data go")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8799", "address to serve the API on")
	return cmd
}

// makeDemo writes the demo's disk images and inventory unless they exist,
// and returns the inventory path.
func makeDemo(dir string) (string, error) {
	disks := filepath.Join(dir, "disks")
	if err := os.MkdirAll(disks, 0o755); err != nil {
		return "", err
	}
	sys := filepath.Join(disks, "web-1-sys.img")
	data := filepath.Join(disks, "web-1-data.img")
	for _, d := range []struct {
		path string
		size int64
		seed uint64
	}{{sys, 64 << 20, 1}, {data, 32 << 20, 2}} {
		if _, err := os.Stat(d.path); err == nil {
			continue
		}
		if err := writeDemoDisk(d.path, d.size, d.seed); err != nil {
			return "", fmt.Errorf("create demo disk: %w", err)
		}
	}
	inv := filepath.Join(dir, "servers.yaml")
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	text := fmt.Sprintf(`# The demo server of csbs demo. Edit it: the service re-reads this file.
servers:
  - id: %s
    name: web-1
    project_id: %s
    availability_zone: az1
    status: ACTIVE
    vcpus: 2
    ram: 4096
    private_ip: 192.168.0.10
    volumes:
      - id: ee27f809-6fb5-40ae-ac46-c932bb4ee8fe
        name: web-1-sys
        path: %s
        bootable: true
      - id: e7f48980-927c-48de-afd4-f0245d2e5100
        name: web-1-data
        path: %s
        bootable: false
`, demoServer, demoProject, abs(sys), abs(data))
	if err := os.WriteFile(inv, []byte(text), 0o644); err != nil {
		return "", err
	}
	return inv, nil
}

// writeDemoDisk writes a sparse image that looks like a used disk: a
// random boot area, text, holes, and random data.
func writeDemoDisk(path string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	rnd := rand.New(rand.NewPCG(seed, seed))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	var text strings.Builder
	for text.Len() < 8<<20 {
		fmt.Fprintf(&text, "%08d INFO service started, listening on port %d, pid %d\n", text.Len(), 8000+rnd.IntN(1000), rnd.IntN(1<<16))
	}
	parts := []struct {
		off  int64
		data []byte
	}{
		{0, random(1 << 20)},
		{4 << 20, []byte(text.String())},
		{size / 2, random(8 << 20)},
	}
	for _, p := range parts {
		if _, err := f.WriteAt(p.data, p.off); err != nil {
			return err
		}
	}
	return f.Sync()
}

func printDemo(w io.Writer, addr string) {
	fmt.Fprintf(w, `
csbs is serving the CSBS v1 API on http://%[1]s (auth.mode none: local use only).
The demo server web-1 (%[2]s) has two disks under ./csbs-demo/disks.

Back it up (the example request of "Creating a Backup for a Resource"):

  curl -s -X POST http://%[1]s/v1/%[3]s/providers/fc4d5750-22e7-4798-8a46-f48f62c4c1da/resources/%[2]s/action \
    -H 'Content-Type: application/json' \
    -d '{"protect": {"backup_name": "backup", "description": "backup des", "extra_info": {}}}'

Follow it, list and count backups:

  curl -s 'http://%[1]s/v1/%[3]s/checkpoint_items?checkpoint_id=<id from the answer>'
  curl -s http://%[1]s/v1/%[3]s/checkpoint_items/count

Delete one:

  curl -s -X DELETE http://%[1]s/v1/%[3]s/providers/fc4d5750-22e7-4798-8a46-f48f62c4c1da/checkpoints/<checkpoint id>

Stop with Ctrl-C; running backups resume at the next start.
`, addr, demoServer, demoProject)
}
