package local

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/compute"
)

func TestParseInventory(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr []string // substrings the error must contain; nil = valid
		check   func(t *testing.T, got []compute.Server)
	}{
		{
			name: "full entry",
			yaml: `
servers:
  - id: 9506416d-db6c-406e-8bca-c0f43793d914
    name: web-1
    project_id: p1
    availability_zone: az2
    status: shutoff
    vcpus: 2
    ram: 4096
    private_ip: 192.168.0.10
    stop_command: ["virsh", "shutdown", "web-1"]
    start_command: ["virsh", "start", "web-1"]
    volumes:
      - id: v1
        name: web-1-sys
        path: /images/web-1-sys.img
        bootable: true
      - id: v2
        path: data.img
        shareable: true
`,
			check: func(t *testing.T, got []compute.Server) {
				want := []compute.Server{{
					ID: "9506416d-db6c-406e-8bca-c0f43793d914", Name: "web-1", ProjectID: "p1",
					AZ: "az2", Status: "SHUTOFF", VCPUs: 2, RAM: 4096, PrivateIP: "192.168.0.10",
					StopCommand:  []string{"virsh", "shutdown", "web-1"},
					StartCommand: []string{"virsh", "start", "web-1"},
					Volumes: []compute.Volume{
						{ID: "v1", Name: "web-1-sys", Path: "/images/web-1-sys.img", Bootable: true},
						{ID: "v2", Path: "/inv/data.img", Shareable: true},
					},
				}}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("got  %+v\nwant %+v", got, want)
				}
			},
		},
		{
			name: "defaults",
			yaml: "servers:\n  - {id: s1, project_id: p1, volumes: [{id: v1, path: /a.img}]}\n",
			check: func(t *testing.T, got []compute.Server) {
				if got[0].AZ != "az1" || got[0].Status != "ACTIVE" {
					t.Errorf("AZ %q status %q, want az1 ACTIVE", got[0].AZ, got[0].Status)
				}
			},
		},
		{
			name:  "empty file",
			yaml:  "",
			check: func(t *testing.T, got []compute.Server) { assertLen(t, got, 0) },
		},
		{
			name: "shared volume on two servers",
			yaml: `
servers:
  - {id: s1, project_id: p1, volumes: [{id: v1, path: /a.img, shareable: true}]}
  - {id: s2, project_id: p1, volumes: [{id: v1, path: /a.img, shareable: true}]}
`,
			check: func(t *testing.T, got []compute.Server) { assertLen(t, got, 2) },
		},
		{
			name:    "missing server id",
			yaml:    "servers:\n  - {name: web-1, project_id: p1}\n",
			wantErr: []string{"servers[0] (web-1)", "id is missing"},
		},
		{
			name: "duplicate server id",
			yaml: `
servers:
  - {id: s1, project_id: p1}
  - {id: s1, project_id: p2}
`,
			wantErr: []string{"servers[1] (s1)", `id "s1" is already used by servers[0]`},
		},
		{
			name:    "missing project_id",
			yaml:    "servers:\n  - {id: s1, name: web-1}\n",
			wantErr: []string{"servers[0] (s1, web-1)", "project_id is missing"},
		},
		{
			name:    "missing volume path",
			yaml:    "servers:\n  - {id: s1, project_id: p1, volumes: [{id: v1, name: sys}]}\n",
			wantErr: []string{"servers[0] (s1): volumes[0] (sys)", "path is missing"},
		},
		{
			name:    "missing volume id",
			yaml:    "servers:\n  - {id: s1, project_id: p1, volumes: [{path: /a.img}]}\n",
			wantErr: []string{"servers[0] (s1): volumes[0]", "id is missing"},
		},
		{
			name:    "duplicate volume id in a server",
			yaml:    "servers:\n  - {id: s1, project_id: p1, volumes: [{id: v1, path: /a.img}, {id: v1, path: /b.img}]}\n",
			wantErr: []string{"volumes[1]", `volume id "v1" appears twice`},
		},
		{
			name: "same volume id, other path",
			yaml: `
servers:
  - {id: s1, project_id: p1, volumes: [{id: v1, path: /a.img}]}
  - {id: s2, project_id: p1, volumes: [{id: v1, path: /b.img}]}
`,
			wantErr: []string{"servers[1] (s2): volumes[0]", `also used by server "s1"`},
		},
		{
			name:    "negative ram",
			yaml:    "servers:\n  - {id: s1, project_id: p1, ram: -1}\n",
			wantErr: []string{"ram is negative"},
		},
		{
			name:    "misspelt key",
			yaml:    "servers:\n  - {id: s1, projectid: p1}\n",
			wantErr: []string{"field projectid not found"},
		},
		{
			name:    "not YAML of the right shape",
			yaml:    "servers: 42\n",
			wantErr: []string{"decode YAML"},
		},
		{
			name: "every problem is reported",
			yaml: `
servers:
  - {name: a, project_id: p1}
  - {id: s2, volumes: [{id: v1}]}
`,
			wantErr: []string{"servers[0] (a): id is missing", "servers[1] (s2): project_id is missing", "path is missing"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInventory([]byte(tt.yaml), "/inv")
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				tt.check(t, got)
				return
			}
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestWriteInventoryRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "servers.yaml")
	inv := Inventory{Servers: []ServerSpec{{
		ID: "s1", Name: "web-1", ProjectID: "p1", Status: "ACTIVE", VCPUs: 1, RAM: 512,
		StopCommand: []string{"true"},
		Volumes:     []VolumeSpec{{ID: "v1", Name: "sys", Path: filepath.Join(dir, "sys.img"), Bootable: true}},
	}}}
	if err := WriteInventory(path, inv); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseInventory(data, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []compute.Server{{
		ID: "s1", Name: "web-1", ProjectID: "p1", AZ: "az1", Status: "ACTIVE", VCPUs: 1, RAM: 512,
		StopCommand: []string{"true"},
		Volumes:     []compute.Volume{{ID: "v1", Name: "sys", Path: filepath.Join(dir, "sys.img"), Bootable: true}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	// The YAML uses the contract's key names.
	for _, key := range []string{"servers:", "project_id: p1", "stop_command:", "bootable: true"} {
		if !strings.Contains(string(data), key) {
			t.Errorf("written inventory lacks %q:\n%s", key, data)
		}
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only servers.yaml", len(ents))
	}
}

func TestWriteInventoryRefusesInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "servers.yaml")
	err := WriteInventory(path, Inventory{Servers: []ServerSpec{{ID: "s1"}}})
	if err == nil || !strings.Contains(err.Error(), "project_id is missing") {
		t.Fatalf("error %v, want project_id is missing", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("invalid inventory was written (stat: %v)", err)
	}
}

func assertLen(t *testing.T, got []compute.Server, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d servers, want %d", len(got), n)
	}
}
