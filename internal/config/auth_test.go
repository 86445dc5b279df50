package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAuthConfig(t *testing.T) {
	const users = `
  users:
    - name: alice
      password_hash: "$2a$10$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"
      projects:
        - {id: b942cc8342734d15bcb246babb1953cf, name: eu-de_alice, roles: [member]}
`
	tests := []struct {
		name string
		yaml string
		env  []string
		want string // substring of the error; "" = valid
	}{
		{"builtin", "auth:\n  mode: builtin\n  region: eu-nl\n  token_ttl: 2h\n" + users, nil, ""},
		{"builtin without users", "auth:\n  mode: builtin\n", nil, "lists nobody"},
		{"builtin short ttl", "auth:\n  mode: builtin\n  token_ttl: 10s\n" + users, nil, "token_ttl"},
		{"builtin bad public_url", "auth:\n  mode: builtin\n  public_url: backup.example.com\n" + users, nil, "public_url"},
		{"builtin on any address", "listen: 0.0.0.0:8799\nauth:\n  mode: builtin\n" + users, nil, ""},
		{"keystone", "auth:\n  mode: keystone\n  keystone_url: https://iam.example.com/v3\n  keystone_user: csbs\n", []string{"CSBS_AUTH_KEYSTONE_PASSWORD=s3cret"}, ""},
		{"keystone without url", "auth:\n  mode: keystone\n  keystone_user: csbs\n  keystone_password: x\n", nil, "keystone_url"},
		{"keystone without credentials", "auth:\n  mode: keystone\n  keystone_url: https://iam.example.com\n", nil, "keystone_password"},
		{"none on any address", "listen: 0.0.0.0:8799\n", nil, "refusing to listen"},
		{"tls half", "tls_cert: /etc/csbs/cert.pem\n", nil, "tls_key"},
		{"tls both", "tls_cert: /etc/csbs/cert.pem\ntls_key: /etc/csbs/key.pem\n", nil, ""},
		{"unknown user key", "auth:\n  mode: builtin\n  users:\n    - name: bob\n      pasword: x\n", nil, "pasword"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "csbs.yaml")
			os.WriteFile(file, []byte(tc.yaml), 0o600)
			c, err := Load(file, tc.env, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Load: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Load: error %v, want one about %q", err, tc.want)
			}
			if tc.name == "builtin" {
				u := c.Auth.Users[0]
				if c.Auth.Region != "eu-nl" || c.Auth.TokenTTL != 2*time.Hour || u.Name != "alice" || len(u.Projects) != 1 ||
					u.Projects[0].Roles[0] != "member" || c.Auth.TokenKeyFile != filepath.Join(c.DataDir, "token.key") {
					t.Errorf("builtin config read as %+v", c.Auth)
				}
			}
			if tc.name == "keystone" && (c.Auth.KeystonePassword != "s3cret" || c.Auth.KeystoneCacheTTL != 5*time.Minute) {
				t.Errorf("keystone config read as %+v", c.Auth)
			}
		})
	}
}

// TestErrorsHideSecrets: a refused configuration never repeats a password.
func TestErrorsHideSecrets(t *testing.T) {
	file := filepath.Join(t.TempDir(), "csbs.yaml")
	os.WriteFile(file, []byte("auth:\n  mode: keystone\n  keystone_password: hunter2-secret\n  keystone_user: csbs\n  keystone_url: iam.example.com\n"), 0o600)
	_, err := Load(file, nil, nil)
	if err == nil || strings.Contains(err.Error(), "hunter2-secret") {
		t.Fatalf("Load: %v", err)
	}
}
