package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestQuotas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "csbs.yaml")
	os.WriteFile(path, []byte(`quotas:
  backup_capacity_gb: 100
  projects:
    p1:
      backups: 5
    p2:
      backup_capacity_gb: -1
      policies: 3
`), 0o600)
	c, err := Load(path, []string{"CSBS_QUOTAS_BACKUPS=50"}, []string{"--quotas-policies", "7"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		project                     string
		backups, capacity, policies int
	}{
		{"other", 50, 100, 7},
		{"p1", 5, 100, 7},
		{"p2", 50, -1, 3},
	} {
		b, g, p := c.Quotas.For(tc.project)
		if b != tc.backups || g != tc.capacity || p != tc.policies {
			t.Errorf("%s: %d %d %d, want %d %d %d", tc.project, b, g, p, tc.backups, tc.capacity, tc.policies)
		}
	}

	d, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, g, p := d.Quotas.For("x"); b != 600 || g != -1 || p != 32 {
		t.Errorf("defaults: %d %d %d, want 600 -1 32", b, g, p)
	}

	os.WriteFile(path, []byte("quotas:\n  projects:\n    p1:\n      backups: -2\n"), 0o600)
	if _, err := Load(path, nil, nil); err == nil || !strings.Contains(err.Error(), "quotas.projects.p1.backups") {
		t.Errorf("a quota of -2: err = %v, want one naming quotas.projects.p1.backups", err)
	}
	if _, err := Load("", []string{"CSBS_QUOTAS_BACKUP_CAPACITY_GB=-5"}, nil); err == nil {
		t.Error("a capacity of -5 was accepted")
	}
}
