package config

import (
	"os"
	"testing"
)

// TestPlacement: which node a process is, and whether jobs are placed on
// nodes, from node.name (file, CSBS_NODE_NAME, --node-name) and the database.
func TestPlacement(t *testing.T) {
	t.Parallel()
	host, _ := os.Hostname()
	for _, tc := range []struct {
		name     string
		env      []string
		args     []string
		wantNode string
		wantOn   bool
	}{
		{"SQLite, no name: single node", nil, nil, "", false},
		{"sqlite: URL, no name: single node", []string{"CSBS_DATABASE=sqlite:/tmp/x.db"}, nil, "", false},
		{"SQLite with a name", []string{"CSBS_NODE_NAME=host-a"}, nil, "host-a", true},
		{"PostgreSQL: the hostname", []string{"CSBS_DATABASE=postgres://db/csbs"}, nil, host, true},
		{"flag beats env", []string{"CSBS_NODE_NAME=env", "CSBS_DATABASE=postgres://db/csbs"}, []string{"--node-name", "flag"}, "flag", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load("", tc.env, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			node, on := c.Placement()
			if node != tc.wantNode || on != tc.wantOn {
				t.Errorf("Placement() = %q, %v; want %q, %v", node, on, tc.wantNode, tc.wantOn)
			}
		})
	}
	for _, bad := range [][]string{{"--node-name", "a b"}, {"--node-name", "x/y"}, {"--node-heartbeat", "10ms"}, {"--node-heartbeat", "1h"}} {
		if _, err := Load("", nil, bad); err == nil {
			t.Errorf("Load(%q) accepted it", bad)
		}
	}
}
