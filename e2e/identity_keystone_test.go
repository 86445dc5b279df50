package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// keystoneStandIn is a small stand-in for an OpenStack Keystone (not a
// real one): it authenticates one service user by password and validates
// the user tokens it was told about, as GET /v3/auth/tokens does — 200
// with the token document, 404 for an unknown subject, 401 when the
// caller's own token is not valid.
type keystoneStandIn struct {
	srv *httptest.Server

	mu          sync.Mutex
	svcTokens   map[string]bool
	users       map[string]standInToken // user token → document
	passwords   map[string]standInUser  // user name → password and project
	validations int
}

// standInUser is a user who may sign in with a password (the console).
type standInUser struct {
	password, project string
	roles             []string
}

type standInToken struct {
	user, project string
	roles         []string
	expires       time.Time
}

const (
	ksServiceUser = "csbs-service"
	ksServicePW   = "svc-Secret-pw-0c1d"
)

func newKeystoneStandIn(t *testing.T) *keystoneStandIn {
	k := &keystoneStandIn{svcTokens: map[string]bool{}, users: map[string]standInToken{}, passwords: map[string]standInUser{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v3/auth/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Auth struct {
				Identity struct {
					Password struct {
						User struct {
							Name     string `json:"name"`
							Password string `json:"password"`
						} `json:"user"`
					} `json:"password"`
				} `json:"identity"`
				Scope struct {
					Project struct {
						ID string `json:"id"`
					} `json:"project"`
				} `json:"scope"`
			} `json:"auth"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		u := req.Auth.Identity.Password.User
		k.mu.Lock()
		pu, ok := k.passwords[u.Name]
		k.mu.Unlock()
		if ok && u.Password == pu.password && req.Auth.Scope.Project.ID == pu.project {
			// A user signing in (the console): a token scoped to the project.
			tok := k.issue(u.Name, pu.project, time.Hour, pu.roles...)
			w.Header().Set("X-Subject-Token", tok)
			w.WriteHeader(201)
			fmt.Fprintf(w, `{"token": {"methods": ["password"], "expires_at": %q, "user": {"id": "uid-%s", "name": %q, "domain": {"id": "default", "name": "Default"}}, "project": {"id": %q, "name": "p", "domain": {"id": "default", "name": "Default"}}, "roles": []}}`,
				time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05.000000Z"), u.Name, u.Name, pu.project)
			return
		}
		if u.Name != ksServiceUser || u.Password != ksServicePW {
			w.WriteHeader(401)
			return
		}
		tok := "svc-" + randomHex(16)
		k.mu.Lock()
		k.svcTokens[tok] = true
		k.mu.Unlock()
		w.Header().Set("X-Subject-Token", tok)
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"token": {"expires_at": %q, "user": {"id": "svc", "name": %q}}}`,
			time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05.000000Z"), ksServiceUser)
	})
	mux.HandleFunc("GET /v3/auth/tokens", func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		defer k.mu.Unlock()
		if !k.svcTokens[r.Header.Get("X-Auth-Token")] {
			w.WriteHeader(401)
			return
		}
		k.validations++
		tk, ok := k.users[r.Header.Get("X-Subject-Token")]
		if !ok {
			w.WriteHeader(404)
			return
		}
		var roles []map[string]string
		for _, r := range tk.roles {
			roles = append(roles, map[string]string{"id": "role-" + r, "name": r})
		}
		w.Header().Set("X-Subject-Token", r.Header.Get("X-Subject-Token"))
		json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
			"methods": []string{"password"}, "audit_ids": []string{randomHex(8)},
			"expires_at": tk.expires.UTC().Format("2006-01-02T15:04:05.000000Z"),
			"issued_at":  time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
			"user":       map[string]any{"id": "uid-" + tk.user, "name": tk.user, "domain": map[string]string{"id": "default", "name": "Default"}},
			"project":    map[string]any{"id": tk.project, "name": "p-" + tk.project, "domain": map[string]string{"id": "default", "name": "Default"}},
			"roles":      roles,
		}})
	})
	mux.HandleFunc("DELETE /v3/auth/tokens", func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		defer k.mu.Unlock()
		tok := r.Header.Get("X-Subject-Token")
		if _, ok := k.users[tok]; !ok || r.Header.Get("X-Auth-Token") != tok && !k.svcTokens[r.Header.Get("X-Auth-Token")] {
			w.WriteHeader(404)
			return
		}
		delete(k.users, tok)
		w.WriteHeader(204)
	})
	k.srv = httptest.NewServer(mux)
	t.Cleanup(k.srv.Close)
	return k
}

// issue makes a user token the stand-in will validate.
func (k *keystoneStandIn) issue(user, project string, expires time.Duration, roles ...string) string {
	tok := "gAAAAAB" + randomHex(40)
	k.mu.Lock()
	k.users[tok] = standInToken{user: user, project: project, roles: roles, expires: time.Now().Add(expires)}
	k.mu.Unlock()
	return tok
}

// revokeServiceTokens makes csbs's service token invalid at the stand-in.
func (k *keystoneStandIn) revokeServiceTokens() {
	k.mu.Lock()
	clear(k.svcTokens)
	k.mu.Unlock()
}

func (k *keystoneStandIn) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.validations
}

// TestIdentityKeystoneStandIn runs auth.mode keystone against the stand-in:
// tokens are validated there, cached, refused when unknown, and scoped to
// their project; the Keystone role admin is an admin.
func TestIdentityKeystoneStandIn(t *testing.T) {
	ks := newKeystoneStandIn(t)
	cfg := filepath.Join(t.TempDir(), "csbs.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("auth:\n  mode: keystone\n  keystone_url: %s/v3\n  keystone_user: %s\n  keystone_cache_ttl: 1h\n", ks.srv.URL, ksServiceUser)), 0o600)
	e := newEnv(t, "--config", cfg)
	t.Setenv("CSBS_AUTH_KEYSTONE_PASSWORD", ksServicePW) // the service password from the environment
	e.addServer(serverID, project, "ACTIVE", 4*mib)
	e.start()
	c := http.DefaultClient

	alice := ks.issue("alice", project, time.Hour, "member")
	bob := ks.issue("bob", projB, time.Hour, "_member_")
	admin := ks.issue("root", projAdmin, time.Hour, "Admin")
	expired := ks.issue("alice", project, -time.Minute, "member")
	list := e.base + "/v1/" + project + "/checkpoint_items"

	if r := call(t, c, "GET", list, alice, nil); r.status != 200 {
		t.Fatalf("alice's token: %d %s", r.status, r.body)
	}
	n := ks.count()
	for i := 0; i < 3; i++ {
		if r := call(t, c, "GET", list, alice, nil); r.status != 200 {
			t.Fatalf("alice's token again: %d %s", r.status, r.body)
		}
	}
	if ks.count() != n {
		t.Errorf("a cached token was validated at Keystone again: %d validations, want %d", ks.count(), n)
	}
	r := call(t, c, "POST", e.base+"/v1/"+project+"/providers/"+provider+"/resources/"+serverID+"/action", alice,
		map[string]any{"protect": map[string]any{"backup_name": "ks-backup"}})
	if r.status != 200 {
		t.Fatalf("protect: %d %s", r.status, r.body)
	}

	cases := []struct {
		name, token, url string
		want             int
	}{
		{"no token", "", list, 401},
		{"unknown token", "gAAAAABnot-issued", list, 401},
		{"expired token", expired, list, 401},
		{"another project's token", bob, list, 403},
		{"all_tenants without admin", bob, e.base + "/v1/" + projB + "/checkpoint_items?all_tenants=true", 403},
		{"own project", bob, e.base + "/v1/" + projB + "/checkpoint_items", 200},
		{"admin in another project", admin, list, 200},
		{"admin all_tenants", admin, e.base + "/v1/" + projAdmin + "/checkpoint_items?all_tenants=true", 200},
	}
	for _, tc := range cases {
		r := call(t, c, "GET", tc.url, tc.token, nil)
		if r.status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, r.status, r.body, tc.want)
		}
		if tc.want == 200 && strings.Contains(tc.name, "admin all_tenants") && !strings.Contains(string(r.body), "ks-backup") {
			t.Errorf("%s: alice's backup missing: %s", tc.name, r.body)
		}
	}

	// csbs's service token is revoked at Keystone: csbs authenticates again.
	ks.revokeServiceTokens()
	fresh := ks.issue("alice", project, time.Hour, "member")
	if r := call(t, c, "GET", list, fresh, nil); r.status != 200 {
		t.Errorf("after the service token was revoked: %d %s", r.status, r.body)
	}
	// No builtin identity in keystone mode: clients authenticate at Keystone.
	if r := call(t, c, "POST", e.base+"/v3/auth/tokens", "", passwordAuth(byName("alice", "Default", "x"), nil)); r.status != 404 {
		t.Errorf("POST /v3/auth/tokens in keystone mode: %d %s, want 404", r.status, r.body)
	}
	noSecrets(t, e, ksServicePW, alice, bob, admin, fresh)
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key, and
// returns their paths and a pool trusting it.
func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "csbs test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestIdentityHTTPS serves builtin identity and the API over TLS with a
// generated certificate: the catalog names the https endpoint, and plain
// HTTP is not answered.
func TestIdentityHTTPS(t *testing.T) {
	certFile, keyFile, pool := selfSignedCert(t)
	e := newEnv(t, identityConfig(t, fmt.Sprintf("tls_cert: %s\ntls_key: %s\n", certFile, keyFile))...)
	e.start()
	if !strings.Contains(e.log(), "scheme=https") {
		t.Fatalf("csbs does not say it serves https:\n%s", e.log())
	}
	base := "https://" + strings.TrimPrefix(e.base, "http://")
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	tok, doc := login(t, c, base, passwordAuth(byName("alice", "Default", alicePW), map[string]any{"project": map[string]any{"id": project}}))
	url := endpoint(t, doc, "eu-de")
	if url != base+"/v1/"+project {
		t.Fatalf("catalog endpoint %s, want %s/v1/%s", url, base, project)
	}
	if r := call(t, c, "GET", url+"/checkpoint_items/count", tok, nil); r.status != 200 {
		t.Fatalf("count over https: %d %s", r.status, r.body)
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	if res, err := plain.Get(e.base + "/v1/" + project + "/checkpoint_items"); err == nil {
		res.Body.Close()
		if res.StatusCode < 400 {
			t.Fatalf("plain HTTP to the TLS port answered %s", res.Status)
		}
	}
	noSecrets(t, e, alicePW, tok)
}
