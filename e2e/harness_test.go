// Package e2e holds black-box tests: they build the real csbs binary, start
// it on a free loopback port with a temporary data_dir, an inventory and
// real disk image files, and talk to it over HTTP like any client would.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/csbs/csbs/internal/compute/local"
)

const (
	provider = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
	project  = "b942cc8342734d15bcb246babb1953cf"
	serverID = "9506416d-db6c-406e-8bca-c0f43793d914"
	mib      = 1 << 20
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "csbs-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "csbs")
	build := exec.Command("go", "build", "-o", binary, "../cmd/csbs")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build csbs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one csbs installation: a data dir, an inventory, disk images and
// the process serving them (restartable).
type env struct {
	t        *testing.T
	dir      string
	dataDir  string
	invPath  string
	inv      local.Inventory
	database string
	extra    []string // more flags for serve
	environ  []string // more environment variables for serve

	mu     sync.Mutex
	cmd    *exec.Cmd
	base   string // http://addr
	logBuf *bytes.Buffer
	exited chan struct{}
}

// newEnv prepares an installation with no servers; add some with addServer.
func newEnv(t *testing.T, extra ...string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, dataDir: filepath.Join(dir, "data"), invPath: filepath.Join(dir, "servers.yaml"), extra: extra}
	e.writeInventory()
	t.Cleanup(func() {
		e.stop(syscall.SIGKILL)
		if t.Failed() && e.logBuf != nil {
			t.Logf("csbs log:\n%s", tail(e.log(), 6000))
		}
	})
	return e
}

// withPostgres makes the installation use a fresh schema of the test
// PostgreSQL server.
func (e *env) withPostgres() *env {
	e.t.Helper()
	base := os.Getenv("CSBS_TEST_POSTGRES")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	if os.Getenv("CSBS_SKIP_POSTGRES") == "1" {
		e.t.Skip("CSBS_SKIP_POSTGRES=1")
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	schema := "e2e_" + randomHex(6)
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		e.t.Fatalf("PostgreSQL at %s: %v (set CSBS_SKIP_POSTGRES=1 to skip)", base, err)
	}
	e.t.Cleanup(func() {
		db, err := sql.Open("pgx", base)
		if err == nil {
			db.Exec("DROP SCHEMA " + schema + " CASCADE")
			db.Close()
		}
	})
	sep := "&"
	if !strings.Contains(base, "?") {
		sep = "?"
	}
	e.database = base + sep + "search_path=" + schema
	return e
}

func (e *env) writeInventory() {
	e.t.Helper()
	if err := local.WriteInventory(e.invPath, e.inv); err != nil {
		e.t.Fatal(err)
	}
}

// disk describes the content of a test image: regions of kinds at offsets.
type region struct {
	off  int64
	n    int
	kind string // text | random | zero
}

// writeImage creates a sparse image of size bytes with the given regions
// and returns its SHA-256.
func writeImage(t *testing.T, path string, size int64, seed uint64, regions ...region) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rnd := mrand.New(mrand.NewPCG(seed, 7))
	for _, r := range regions {
		b := make([]byte, r.n)
		switch r.kind {
		case "random":
			for i := 0; i+8 <= len(b); i += 8 {
				v := rnd.Uint64()
				for j := 0; j < 8; j++ {
					b[i+j] = byte(v >> (8 * j))
				}
			}
		case "text":
			var sb strings.Builder
			for sb.Len() < r.n {
				fmt.Fprintf(&sb, "line %d of the log: user %d logged in from 10.0.%d.%d\n", sb.Len(), rnd.IntN(1000), rnd.IntN(255), rnd.IntN(255))
			}
			copy(b, sb.String())
		}
		if _, err := f.WriteAt(b, r.off); err != nil {
			t.Fatal(err)
		}
	}
	return fileHash(t, path)
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

// addServer adds a server with disks of the given sizes (each filled with
// text, random data and holes) and returns the image paths.
func (e *env) addServer(id, projectID, status string, sizes ...int64) []string {
	e.t.Helper()
	spec := local.ServerSpec{ID: id, Name: "srv-" + id[:4], ProjectID: projectID, Status: status, VCPUs: 2, RAM: 4096, PrivateIP: "192.168.0.10"}
	var paths []string
	for i, size := range sizes {
		p := filepath.Join(e.dir, fmt.Sprintf("%s-%d.img", id[:8], i))
		writeImage(e.t, p, size, uint64(len(e.inv.Servers)*10+i+1),
			region{0, int(min(size, 2*mib)), "random"},
			region{min(size/4, size-mib), int(min(size/4, 8*mib)), "text"},
			region{size / 2, int(min(size/4, 8*mib)), "random"},
		)
		paths = append(paths, p)
		spec.Volumes = append(spec.Volumes, local.VolumeSpec{
			ID: fmt.Sprintf("%s-vol%d", id[:8], i), Name: fmt.Sprintf("%s-disk%d", spec.Name, i), Path: p, Bootable: i == 0,
		})
	}
	e.inv.Servers = append(e.inv.Servers, spec)
	e.writeInventory()
	return paths
}

// start runs csbs serve and waits until it answers.
func (e *env) start() {
	e.t.Helper()
	args := []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", e.dataDir, "--compute-inventory", e.invPath,
		"--jobs-lease", "3s", "--log-level", "debug", "--repository-gc-margin", "1500ms"}
	if e.database != "" {
		args = append(args, "--database", e.database)
	}
	args = append(args, e.extra...)
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append(os.Environ(), "CSBS_LOG_FORMAT=text"), e.environ...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	buf := &bytes.Buffer{}
	addr := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		re := regexp.MustCompile(`"csbs serving" listen=(\S+)`)
		for sc.Scan() {
			line := sc.Text()
			e.mu.Lock()
			buf.WriteString(line + "\n")
			e.mu.Unlock()
			if m := re.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		cmd.Wait()
		close(exited)
	}()
	e.mu.Lock()
	e.cmd, e.logBuf, e.exited = cmd, buf, exited
	e.mu.Unlock()
	select {
	case a := <-addr:
		e.base = "http://" + a
	case <-exited:
		e.t.Fatalf("csbs exited at start:\n%s", e.log())
	case <-time.After(30 * time.Second):
		e.t.Fatalf("csbs did not start within 30s:\n%s", e.log())
	}
}

// stop sends sig and waits for the process to end.
func (e *env) stop(sig syscall.Signal) {
	e.mu.Lock()
	cmd, exited := e.cmd, e.exited
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

func (e *env) log() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.logBuf == nil {
		return ""
	}
	return e.logBuf.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// resp is an HTTP answer.
type resp struct {
	status int
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// do sends a request; body may be nil, a string (sent as is) or a value
// (sent as JSON). path starts with /v1/… or is a full URL.
func (e *env) do(method, path string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	url := path
	if !strings.HasPrefix(path, "http") {
		url = e.base + path
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, b}
}

// protect backs up a server and returns the checkpoint id and item id.
func (e *env) protect(projectID, server string, params map[string]any) (checkpointID, itemID string) {
	e.t.Helper()
	if params == nil {
		params = map[string]any{}
	}
	r := e.do("POST", fmt.Sprintf("/v1/%s/providers/%s/resources/%s/action", projectID, provider, server), map[string]any{"protect": params})
	if r.status != 200 {
		e.t.Fatalf("protect: %d %s", r.status, r.body)
	}
	cp := r.json(e.t)["checkpoint"].(map[string]any)
	checkpointID = cp["id"].(string)
	items := e.list(projectID, "checkpoint_id="+checkpointID)
	if len(items) != 1 {
		e.t.Fatalf("checkpoint %s has %d backups, want 1", checkpointID, len(items))
	}
	return checkpointID, items[0]["id"].(string)
}

// list returns the backups of a query (one page).
func (e *env) list(projectID, query string) []map[string]any {
	e.t.Helper()
	r := e.do("GET", fmt.Sprintf("/v1/%s/checkpoint_items?%s", projectID, query), nil)
	if r.status != 200 {
		e.t.Fatalf("list %s: %d %s", query, r.status, r.body)
	}
	var out struct {
		Items []map[string]any `json:"checkpoint_items"`
	}
	json.Unmarshal(r.body, &out)
	return out.Items
}

// item returns a backup, or nil when it is gone (404).
func (e *env) item(projectID, id string) map[string]any {
	e.t.Helper()
	r := e.do("GET", fmt.Sprintf("/v1/%s/checkpoint_items/%s", projectID, id), nil)
	if r.status == 404 {
		return nil
	}
	if r.status != 200 {
		e.t.Fatalf("get %s: %d %s", id, r.status, r.body)
	}
	return r.json(e.t)["checkpoint_item"].(map[string]any)
}

// waitStatus polls a backup until its status is one of want, and returns it.
func (e *env) waitStatus(projectID, id string, timeout time.Duration, want ...string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		last = e.item(projectID, id)
		st := "gone"
		if last != nil {
			st = last["status"].(string)
		}
		for _, w := range want {
			if st == w {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("backup %s did not reach %v within %s; last: %v", id, want, timeout, last)
	return nil
}

// count returns the count of a query.
func (e *env) count(projectID, query string) int {
	e.t.Helper()
	r := e.do("GET", fmt.Sprintf("/v1/%s/checkpoint_items/count?%s", projectID, query), nil)
	if r.status != 200 {
		e.t.Fatalf("count: %d %s", r.status, r.body)
	}
	return int(r.json(e.t)["count"].(float64))
}

// repoBytes is the size of all files of the repository.
func (e *env) repoBytes() int64 {
	e.t.Helper()
	var n int64
	filepath.Walk(filepath.Join(e.dataDir, "repository"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// randInt returns a random number below n, for test data.
func randInt(n int64) int64 {
	v, _ := rand.Int(rand.Reader, big.NewInt(n))
	return v.Int64()
}
