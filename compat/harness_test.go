// Package compat checks that the clients people already use against the
// public cloud's CSBS work against csbs unchanged: the cloud's own Go SDK
// (github.com/opentelekomcloud/gophertelekomcloud, packages
// openstack/csbs/v1/...) and the flows of its Terraform provider, replayed
// with the provider's exact pending and target states.
//
// It is a module of its own so that the SDK stays out of the product's
// go.mod. The tests build the real csbs binary from the parent module and
// start it with builtin Keystone identity on a free loopback port, real
// disk image files and SQLite; every request goes through the SDK.
package compat

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	golangsdk "github.com/opentelekomcloud/gophertelekomcloud"
	"github.com/opentelekomcloud/gophertelekomcloud/openstack"
)

const (
	projectID   = "b942cc8342734d15bcb246babb1953cf"
	projectName = "eu-de_compat" // the SDK takes the region from the project name's prefix
	region      = "eu-de"
	user        = "alice"
	password    = "compat-test-password"
	mib         = 1 << 20
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "csbs-compat-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "csbs")
	build := exec.Command("go", "build", "-o", binary, "./cmd/csbs")
	build.Dir = ".." // the product's module
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build csbs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a server of the inventory with one disk image.
type server struct {
	id, name, ip string
	disk         string   // image path
	stop         []string // stop_command, run before a restore
}

// csbs is one running installation.
type csbs struct {
	t    *testing.T
	dir  string
	base string // http://127.0.0.1:port

	mu  sync.Mutex
	log bytes.Buffer
	cmd *exec.Cmd
}

// start writes an inventory of servers and a builtin-identity config and
// runs csbs serve with workers job workers.
func start(t *testing.T, workers int, servers ...server) *csbs {
	t.Helper()
	c := &csbs{t: t, dir: t.TempDir()}
	var inv strings.Builder
	inv.WriteString("servers:\n")
	for _, s := range servers {
		fmt.Fprintf(&inv, "  - id: %s\n    name: %s\n    project_id: %s\n    status: ACTIVE\n    vcpus: 2\n    ram: 2048\n    private_ip: %s\n",
			s.id, s.name, projectID, s.ip)
		if len(s.stop) > 0 {
			fmt.Fprintf(&inv, "    stop_command: [%s]\n", quoteAll(s.stop))
		}
		fmt.Fprintf(&inv, "    volumes:\n      - id: %s-vol\n        name: %s-disk\n        path: %s\n        bootable: true\n", s.id[:8], s.name, s.disk)
	}
	write(t, filepath.Join(c.dir, "servers.yaml"), inv.String())
	write(t, filepath.Join(c.dir, "csbs.yaml"), fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %s
compute:
  inventory: %s
jobs:
  workers: %d
auth:
  mode: builtin
  region: %s
  users:
    - name: %s
      password: %s
      projects:
        - {id: %s, name: %s, roles: [member]}
`, filepath.Join(c.dir, "data"), filepath.Join(c.dir, "servers.yaml"), workers, region, user, password, projectID, projectName))

	cmd := exec.Command(binary, "serve", "--config", filepath.Join(c.dir, "csbs.yaml"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.cmd = cmd
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`"csbs serving" listen=(\S+)`)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			c.log.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			c.mu.Lock()
			t.Logf("csbs log:\n%s", tail(c.log.String(), 8000))
			c.mu.Unlock()
		}
	})
	select {
	case a := <-addr:
		c.base = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatalf("csbs did not start:\n%s", c.log.String())
	}
	return c
}

// newServer makes a server with a sparse disk image of size bytes holding
// random data and text at a few offsets.
func newServer(t *testing.T, id, name, ip string, size int64) server {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rnd := mrand.New(mrand.NewPCG(uint64(len(name)), uint64(size)))
	for _, off := range []int64{0, size / 3, size - 2*mib} {
		b := make([]byte, mib)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return server{id: id, name: name, ip: ip, disk: p}
}

// provider authenticates like the SDK's users do (password, project by
// name in the user's domain) and returns the CSBS service client found in
// the token's catalog.
func (c *csbs) client() (*golangsdk.ProviderClient, *golangsdk.ServiceClient) {
	c.t.Helper()
	pc, err := openstack.AuthenticatedClient(golangsdk.AuthOptions{
		IdentityEndpoint: c.base + "/v3", Username: user, Password: password,
		DomainName: "Default", TenantName: projectName,
	})
	if err != nil {
		c.t.Fatalf("authenticate through the SDK: %v", err)
	}
	sc, err := openstack.NewCSBSService(pc, golangsdk.EndpointOpts{Region: region})
	if err != nil {
		c.t.Fatalf("data-protect endpoint from the catalog: %v", err)
	}
	if want := c.base + "/v1/" + projectID + "/"; sc.Endpoint != want {
		c.t.Fatalf("catalog endpoint %q, want %q", sc.Endpoint, want)
	}
	return pc, sc
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// waitState replays the Terraform plugin SDK's StateChangeConf: refresh
// until the state is a target; a state that is neither pending nor target,
// or an error, fails the wait as it fails terraform apply. It returns the
// states seen.
func waitState(t *testing.T, what string, pending, target []string, timeout time.Duration, refresh func() (string, error)) []string {
	t.Helper()
	seen, err := stateChange(what, pending, target, timeout, refresh)
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

// stateChange is waitState for goroutines other than the test's.
func stateChange(what string, pending, target []string, timeout time.Duration, refresh func() (string, error)) ([]string, error) {
	var seen []string
	deadline := time.Now().Add(timeout)
	for {
		st, err := refresh()
		if err != nil {
			return seen, fmt.Errorf("%s: refresh failed after states %v: %w", what, seen, err)
		}
		seen = append(seen, st)
		if contains(target, st) {
			return seen, nil
		}
		if !contains(pending, st) {
			return seen, fmt.Errorf("%s: unexpected state %q, wanted target %v (pending %v); states seen %v", what, st, target, pending, seen)
		}
		if time.Now().After(deadline) {
			return seen, fmt.Errorf("%s: still %q after %s; states seen %v", what, st, timeout, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
