package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLibvirtKeys: the libvirt driver's keys, their defaults and their
// refusals, in all three spellings.
func TestLibvirtKeys(t *testing.T) {
	for _, tt := range []struct {
		name    string
		file    string
		env     []string
		flags   []string
		want    Libvirt
		wantErr string
	}{
		{"defaults", "compute:\n  driver: libvirt\n", nil, nil,
			Libvirt{URI: "qemu:///system", ScratchDir: "/var/tmp/csbs-libvirt", ShutdownTimeout: 2 * time.Minute}, ""},
		{"file", "compute:\n  driver: libvirt\n  libvirt:\n    uri: qemu+ssh://h/system\n    default_project: p1\n    shutdown_timeout: 30s\n", nil, nil,
			Libvirt{URI: "qemu+ssh://h/system", DefaultProject: "p1", ScratchDir: "/var/tmp/csbs-libvirt", ShutdownTimeout: 30 * time.Second}, ""},
		{"environment", "", []string{"CSBS_COMPUTE_DRIVER=libvirt", "CSBS_COMPUTE_LIBVIRT_DEFAULT_PROJECT=p2"}, nil,
			Libvirt{URI: "qemu:///system", DefaultProject: "p2", ScratchDir: "/var/tmp/csbs-libvirt", ShutdownTimeout: 2 * time.Minute}, ""},
		{"flag", "", []string{"CSBS_COMPUTE_DRIVER=libvirt"}, []string{"--compute-libvirt-uri", "qemu:///session"},
			Libvirt{URI: "qemu:///session", ScratchDir: "/var/tmp/csbs-libvirt", ShutdownTimeout: 2 * time.Minute}, ""},
		{"empty uri", "compute:\n  driver: libvirt\n  libvirt:\n    uri: \"\"\n", nil, nil, Libvirt{}, "compute.libvirt.uri"},
		{"zero timeout", "compute:\n  driver: libvirt\n  libvirt:\n    shutdown_timeout: 0s\n", nil, nil, Libvirt{}, "compute.libvirt.shutdown_timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(path, tt.env, tt.flags)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Compute.Driver != "libvirt" || c.Compute.Libvirt != tt.want {
				t.Errorf("driver %s, libvirt %+v; want libvirt, %+v", c.Compute.Driver, c.Compute.Libvirt, tt.want)
			}
		})
	}
}
