package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "csbs.yaml")
	os.WriteFile(file, []byte("listen: 127.0.0.1:9000\ndata_dir: /from/file\njobs:\n  workers: 4\ncompute:\n  inventory: /file/servers.yaml\n"), 0o600)

	c, err := Load(file,
		[]string{"CSBS_DATA_DIR=/from/env", "CSBS_JOBS_LEASE=45s", "CSBS_COMPUTE_INVENTORY=/env/servers.yaml"},
		[]string{"--compute-inventory", "/flag/servers.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"listen from file", c.Listen, "127.0.0.1:9000"},
		{"data_dir env beats file", c.DataDir, "/from/env"},
		{"workers from file", c.Jobs.Workers, 4},
		{"lease from env", c.Jobs.Lease, 45 * time.Second},
		{"inventory flag beats env", c.Compute.Inventory, "/flag/servers.yaml"},
		{"repository path derived", c.Repository.Path, "/from/env/repository"},
		{"password file derived", c.Repository.PasswordFile, "/from/env/repository.key"},
		{"auth default", c.Auth.Mode, "none"},
		{"clones kept by default", c.Compute.Local.KeepClones, true},
	}
	for _, tc := range checks {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestLoadRefuses(t *testing.T) {
	cases := []struct {
		name string
		file string
		env  []string
		want string // substring of the error, naming the key
	}{
		{"unknown key", "lisen: x\n", nil, "lisen"},
		{"bad listen", "", []string{"CSBS_LISTEN=nonsense"}, "listen"},
		{"none on public address", "listen: 0.0.0.0:8799\n", nil, "allow_insecure_listen"},
		{"bad auth mode", "auth:\n  mode: magic\n", nil, "auth.mode"},
		{"bad driver", "compute:\n  driver: aws\n", nil, "compute.driver"},
		{"bad workers", "", []string{"CSBS_JOBS_WORKERS=zero"}, "jobs.workers"},
		{"zero workers", "jobs:\n  workers: 0\n", nil, "jobs.workers"},
		{"bad database", "database: mysql://u:secret@h/db\n", nil, "database"},
		{"bad format", "log:\n  format: xml\n", nil, "log.format"},
		{"bad keep_clones", "", []string{"CSBS_COMPUTE_LOCAL_KEEP_CLONES=maybe"}, "compute.local.keep_clones"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = filepath.Join(t.TempDir(), "c.yaml")
				os.WriteFile(path, []byte(tc.file), 0o600)
			}
			_, err := Load(path, tc.env, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error leaks a password: %v", err)
			}
		})
	}
}

// TestKeepClonesOff: the local driver's clones can be turned off from the
// file, the environment or a flag.
func TestKeepClonesOff(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte("compute:\n  local:\n    keep_clones: false\n"), 0o600)
	for name, load := range map[string]func() (Config, error){
		"file": func() (Config, error) { return Load(file, nil, nil) },
		"env":  func() (Config, error) { return Load("", []string{"CSBS_COMPUTE_LOCAL_KEEP_CLONES=false"}, nil) },
		"flag": func() (Config, error) { return Load("", nil, []string{"--compute-local-keep-clones=false"}) },
	} {
		c, err := load()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Compute.Local.KeepClones {
			t.Errorf("%s: keep_clones still true", name)
		}
	}
}

func TestInsecureListenForced(t *testing.T) {
	c, err := Load("", []string{"CSBS_LISTEN=0.0.0.0:8799", "CSBS_AUTH_ALLOW_INSECURE_LISTEN=true"}, nil)
	if err != nil || c.Listen != "0.0.0.0:8799" {
		t.Fatalf("got %v %v", c.Listen, err)
	}
}
