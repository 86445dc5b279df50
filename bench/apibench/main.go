// Command apibench measures the request throughput of the csbs API against
// a bare net/http server answering the same bytes, in the same run.
//
// It starts csbs (built from this checkout unless -csbs names a binary) on a
// loopback port with a temporary data dir and a server with a 1 MiB disk,
// creates -backups backups through the API and waits until all are
// available, then records the exact response of GET checkpoint_items/{id}
// and of the list page ?limit=50. A second process (this program with
// -serve-bare) answers those bytes from a bare net/http handler. A closed
// loop load generator (-conns workers, each with its own keep-alive
// connection) then hits, for -duration after -warmup: csbs GET item, bare
// GET item, csbs list page, bare list page.
//
// It prints requests/s, latency percentiles, errors (transport errors,
// non-200 answers, bodies other than the recorded ones), the server's CPU
// time per request, and PASS/MISS against the targets: csbs GET at least
// half of bare's requests/s, list page p99 under 50 ms, no errors.
//
// Usage (from the repository root):
//
//	go run ./bench/apibench [-csbs bin/csbs] [-duration 5s] [-conns 32]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	provider = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
	project  = "b942cc8342734d15bcb246babb1953cf"
	serverID = "9506416d-db6c-406e-8bca-c0f43793d914"
	volumeID = "ee27f809-6fb5-40ae-ac46-c932bb4ee8fe"
)

func main() {
	var (
		csbsBin  = flag.String("csbs", "", "csbs binary to test (default: go build ./cmd/csbs from the enclosing module)")
		backups  = flag.Int("backups", 50, "backups to create before measuring")
		conns    = flag.Int("conns", 32, "concurrent connections (closed loop, one per worker)")
		duration = flag.Duration("duration", 5*time.Second, "measured time per target")
		warmup   = flag.Duration("warmup", time.Second, "unmeasured time before each measurement")
		keep     = flag.Bool("keep", false, "keep the temporary directory")
		client   = flag.String("client", "go", "load generator client: go (net/http Transport) or raw (minimal HTTP/1.1, like wrk: less client CPU)")

		bare      = flag.Bool("serve-bare", false, "internal: serve the recorded bytes from -dir and print the address")
		bareDir   = flag.String("dir", "", "internal: directory of the recorded responses")
		bareCType = flag.String("content-type", "application/json", "internal: Content-Type of the recorded responses")
	)
	flag.Parse()
	if *bare {
		if err := serveBare(*bareDir, *bareCType); err != nil {
			fmt.Fprintln(os.Stderr, "apibench -serve-bare:", err)
			os.Exit(1)
		}
		return
	}
	if *client != "go" && *client != "raw" {
		fmt.Fprintf(os.Stderr, "apibench: -client %q: want go or raw\n", *client)
		os.Exit(2)
	}
	cfg := config{csbs: *csbsBin, backups: *backups, conns: *conns, duration: *duration, warmup: *warmup, keep: *keep, client: *client}
	if err := run(context.Background(), cfg); err != nil {
		fmt.Fprintln(os.Stderr, "apibench:", err)
		os.Exit(1)
	}
}

type config struct {
	csbs             string
	backups, conns   int
	duration, warmup time.Duration
	keep             bool
	client           string
}

func run(ctx context.Context, cfg config) error {
	dir, err := os.MkdirTemp("", "csbs-apibench")
	if err != nil {
		return err
	}
	if cfg.keep {
		fmt.Fprintln(os.Stderr, "keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	bin := cfg.csbs
	if bin == "" {
		if bin, err = buildCSBS(ctx, dir); err != nil {
			return err
		}
	}
	if err := writeServer(dir); err != nil {
		return err
	}
	csbs, err := start(ctx, bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
		"--compute-inventory", filepath.Join(dir, "servers.yaml"))
	if err != nil {
		return err
	}
	defer csbs.stop()
	base := "http://" + csbs.addr + "/v1/" + project

	load0 := loadAvg()
	fmt.Fprintf(os.Stderr, "creating %d backups", cfg.backups)
	t0 := time.Now()
	var itemID string
	for i := range cfg.backups {
		id, err := protect(ctx, base, fmt.Sprintf("bench-%02d", i))
		if err != nil {
			return fmt.Errorf("\nbackup %d: %w\ncsbs log:\n%s", i+1, err, csbs.logTail())
		}
		if i == 0 {
			itemID = id
		}
		fmt.Fprint(os.Stderr, ".")
	}
	fmt.Fprintf(os.Stderr, " %.1f s\n", time.Since(t0).Seconds())

	itemPath := "/checkpoint_items/" + itemID
	listPath := "/checkpoint_items?limit=50"
	item, ctype, err := fetch(ctx, base+itemPath)
	if err != nil {
		return err
	}
	list, _, err := fetch(ctx, base+listPath)
	if err != nil {
		return err
	}
	var page struct {
		Items []json.RawMessage `json:"checkpoint_items"`
	}
	if err := json.Unmarshal(list, &page); err != nil {
		return fmt.Errorf("list page: %w", err)
	}
	if want := min(50, cfg.backups); len(page.Items) != want {
		return fmt.Errorf("list page has %d items, want %d", len(page.Items), want)
	}

	// The bare server is a process of its own, like csbs, so both are
	// measured the same way and their CPU time can be read apart.
	if err := os.WriteFile(filepath.Join(dir, "item.body"), item, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "list.body"), list, 0o644); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bare, err := start(ctx, self, "-serve-bare", "-dir", dir, "-content-type", ctype)
	if err != nil {
		return err
	}
	defer bare.stop()
	bareBase := "http://" + bare.addr + "/v1/" + project

	targets := []struct {
		name string
		p    *proc
		url  string
		want []byte
	}{
		{"csbs GET item", csbs, base + itemPath, item},
		{"bare GET item", bare, bareBase + itemPath, item},
		{"csbs list page (50)", csbs, base + listPath, list},
		{"bare list page (50)", bare, bareBase + listPath, list},
	}
	res := make([]result, len(targets))
	for i, t := range targets {
		fmt.Fprintf(os.Stderr, "load: %s for %s after %s warm-up\n", t.name, cfg.duration, cfg.warmup)
		res[i] = load(ctx, cfg.client, t.url, t.want, cfg.conns, cfg.warmup, cfg.duration, t.p.pid)
		res[i].name = t.name
	}

	fmt.Printf("\nAPI benchmark: %d backups stored, %d connections (%s client), %s per target after %s warm-up, loopback\n",
		cfg.backups, cfg.conns, cfg.client, cfg.duration, cfg.warmup)
	fmt.Printf("GET item body %d bytes, list page body %d bytes (Content-Type %s)\n", len(item), len(list), ctype)
	fmt.Printf("machine: %d CPUs; load average before the run %s (other work on the machine skews the figures)\n\n", runtime.NumCPU(), load0)
	fmt.Printf("%-21s %10s %9s %9s %9s %9s %8s %13s\n", "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "srv CPU µs/req")
	for _, r := range res {
		fmt.Printf("%-21s %10.0f %9.3f %9.3f %9.3f %9.3f %8d %13.1f\n", r.name, r.rps(), ms(r.pct(50)), ms(r.pct(90)),
			ms(r.pct(99)), ms(r.pct(100)), r.errors, r.cpuPerReq())
	}
	for _, r := range res {
		if r.firstErr != nil {
			fmt.Printf("first error of %s: %v\n", r.name, r.firstErr)
		}
	}

	getRatio := res[0].rps() / res[1].rps()
	listRatio := res[2].rps() / res[3].rps()
	var errs int64
	for _, r := range res {
		errs += r.errors
	}
	fmt.Println()
	fmt.Printf("GET item   csbs/bare req/s %.2f  (target >= 0.50)  %s\n", getRatio, verdict(getRatio >= 0.5))
	fmt.Printf("list page  csbs/bare req/s %.2f  (no target)\n", listRatio)
	fmt.Printf("list page  csbs p99 %.1f ms  (target < 50 ms)  %s\n", ms(res[2].pct(99)), verdict(res[2].pct(99) < 50*time.Millisecond))
	fmt.Printf("errors     %d  (target 0)  %s\n", errs, verdict(errs == 0))
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// loadAvg returns the 1, 5 and 15 minute load averages of the machine.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// buildCSBS builds ./cmd/csbs of the module enclosing the working directory.
func buildCSBS(ctx context.Context, dir string) (string, error) {
	root, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(root, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/csbs/csbs")) {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			return "", errors.New("not inside the csbs module: run from the repository or pass -csbs BINARY")
		}
		root = parent
	}
	bin := filepath.Join(dir, "csbs")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/csbs")
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/csbs: %w", err)
	}
	return bin, nil
}

// writeServer writes a 1 MiB disk image (half text, half random) and an
// inventory with one server owning it.
func writeServer(dir string) error {
	img := make([]byte, 1<<20)
	var sb strings.Builder
	for i := 0; sb.Len() < len(img)/2; i++ {
		fmt.Fprintf(&sb, "May 13 10:%02d:%02d web-1 sshd[%d]: Accepted publickey for deploy from 10.0.3.%d\n", i/60%60, i%60, 1000+i, i%250)
	}
	copy(img, sb.String())
	rand.NewChaCha8([32]byte{1}).Read(img[len(img)/2:])
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, img, 0o644); err != nil {
		return err
	}
	inv := fmt.Sprintf(`servers:
  - id: %s
    name: bench
    project_id: %s
    status: ACTIVE
    volumes:
      - {id: %s, name: disk, path: %s, bootable: true}
`, serverID, project, volumeID, disk)
	return os.WriteFile(filepath.Join(dir, "servers.yaml"), []byte(inv), 0o644)
}

// proc is a started server process.
type proc struct {
	cmd  *exec.Cmd
	pid  int
	addr string

	mu   sync.Mutex
	tail []string // last lines of its stderr
	done chan struct{}
}

var listenRE = regexp.MustCompile(`listen=([0-9.]+:[0-9]+)`)

// start runs name with args and waits until it logs listen=ADDR (csbs logs
// `"csbs serving" listen=ADDR` on stderr; the bare server prints
// listen=ADDR on stdout).
func start(ctx context.Context, name string, args ...string) (*proc, error) {
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	// A server must not outlive this program, even when it is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = p.cmd.Stdout // one stream: a pipe shared by both
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	p.pid = p.cmd.Process.Pid
	addrc := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > 20 {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil && (strings.Contains(line, "csbs serving") || strings.HasPrefix(line, "listen=")) {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case p.addr = <-addrc:
		return p, nil
	case <-p.done:
		p.cmd.Wait()
		return nil, fmt.Errorf("%s exited before serving: %s", name, p.logTail())
	case <-time.After(60 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s did not serve within 60 s: %s", name, p.logTail())
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
}

func (p *proc) logTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// stop asks the process to end, and kills it when it takes too long.
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
	}
	p.cmd.Wait()
}

// cpuTime returns the user+system CPU time process pid has used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// protect creates a backup and waits until its item is available; it
// returns the item id.
func protect(ctx context.Context, base, name string) (string, error) {
	body := fmt.Sprintf(`{"protect":{"backup_name":%q}}`, name)
	var cp struct {
		Checkpoint struct {
			ID string `json:"id"`
		} `json:"checkpoint"`
	}
	if err := call(ctx, "POST", base+"/providers/"+provider+"/resources/"+serverID+"/action", body, &cp); err != nil {
		return "", err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var l struct {
			Items []struct {
				ID         string `json:"id"`
				Status     string `json:"status"`
				ExtendInfo struct {
					FailReason string `json:"fail_reason"`
				} `json:"extend_info"`
			} `json:"checkpoint_items"`
		}
		if err := call(ctx, "GET", base+"/checkpoint_items?checkpoint_id="+cp.Checkpoint.ID, "", &l); err != nil {
			return "", err
		}
		if len(l.Items) > 0 {
			switch it := l.Items[0]; it.Status {
			case "available":
				return it.ID, nil
			case "error":
				return "", fmt.Errorf("backup %s failed: %s", it.ID, it.ExtendInfo.FailReason)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "", fmt.Errorf("backup of checkpoint %s not available after 2 minutes", cp.Checkpoint.ID)
}

func call(ctx context.Context, method, url, body string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// fetch returns the body and Content-Type of a 200 answer to GET url.
func fetch(ctx context.Context, url string) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return b, resp.Header.Get("Content-Type"), nil
}

// serveBare answers every request for a list path with dir/list.body and
// any other with dir/item.body, the way a minimal handler writes them.
func serveBare(dir, ctype string) error {
	item, err := os.ReadFile(filepath.Join(dir, "item.body"))
	if err != nil {
		return err
	}
	list, err := os.ReadFile(filepath.Join(dir, "list.body"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := item
		if strings.HasSuffix(r.URL.Path, "/checkpoint_items") {
			b = list
		}
		w.Header().Set("Content-Type", ctype)
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	})
	fmt.Printf("listen=%s\n", ln.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// result is what one load run measured.
type result struct {
	name     string
	lat      []time.Duration // sorted
	window   time.Duration
	errors   int64
	firstErr error
	cpu      time.Duration // server CPU during the window
}

func (r result) rps() float64 { return float64(len(r.lat)) / r.window.Seconds() }

// pct returns the p-th percentile latency (100 = max).
func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(float64(len(r.lat))*p/100+0.5) - 1
	return r.lat[max(0, min(i, len(r.lat)-1))]
}

func (r result) cpuPerReq() float64 {
	if len(r.lat) == 0 {
		return 0
	}
	return float64(r.cpu.Microseconds()) / float64(len(r.lat))
}

// load runs conns closed-loop workers against url for warmup+duration and
// records the requests that start after the warm-up. An answer that is not
// a 200 with exactly the want bytes is an error.
func load(ctx context.Context, client, url string, want []byte, conns int, warmup, duration time.Duration, pid int) result {
	type worker struct {
		lat      []time.Duration
		errors   int64
		firstErr error
	}
	ws := make([]worker, conns)
	start := time.Now()
	measure, end := start.Add(warmup), start.Add(warmup+duration)
	cpu0 := make(chan time.Duration, 1)
	go func() {
		time.Sleep(time.Until(measure))
		cpu0 <- cpuTime(pid)
	}()
	var wg sync.WaitGroup
	for i := range ws {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			var get func() error
			if client == "raw" {
				c := newRawClient(url, want)
				defer c.close()
				get = c.get
			} else {
				// Each worker has its own transport: one keep-alive
				// connection that no other worker contends for.
				tr := &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}
				defer tr.CloseIdleConnections()
				c := &http.Client{Transport: tr}
				var buf bytes.Buffer
				get = func() error { return goGet(ctx, c, url, want, &buf) }
			}
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				err := get()
				d := time.Since(t0)
				if t0.Before(measure) {
					continue
				}
				if err != nil {
					w.errors++
					if w.firstErr == nil {
						w.firstErr = err
					}
					continue
				}
				w.lat = append(w.lat, d)
			}
		}(&ws[i])
	}
	wg.Wait()
	cpu := cpuTime(pid) - <-cpu0
	var r result
	for _, w := range ws {
		r.lat = append(r.lat, w.lat...)
		r.errors += w.errors
		if r.firstErr == nil {
			r.firstErr = w.firstErr
		}
	}
	slices.Sort(r.lat)
	r.window, r.cpu = duration, cpu
	return r
}

// goGet is one request through net/http's client.
func goGet(ctx context.Context, c *http.Client, url string, want []byte, buf *bytes.Buffer) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	buf.Reset()
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		return fmt.Errorf("body of %d bytes differs from the recorded %d bytes", buf.Len(), len(want))
	}
	return nil
}

// rawClient speaks just enough HTTP/1.1 over one keep-alive connection to
// send a fixed GET and read its answer (Content-Length or chunked), the way
// wrk does: it spends far less CPU per request than net/http's client, so
// on a small machine more of the CPU is left to the server under test.
type rawClient struct {
	addr string
	req  []byte
	want []byte
	conn net.Conn
	br   *bufio.Reader
	body []byte
}

func newRawClient(url string, want []byte) *rawClient {
	rest, _ := strings.CutPrefix(url, "http://")
	host, path, _ := strings.Cut(rest, "/")
	req := "GET /" + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: apibench\r\nAccept: application/json\r\n\r\n"
	return &rawClient{addr: host, req: []byte(req), want: want}
}

func (c *rawClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// get sends the request and checks the answer; after any error the
// connection is dropped and the next call dials a new one.
func (c *rawClient) get() error {
	err := c.roundTrip()
	if err != nil {
		c.close()
	}
	return err
}

func (c *rawClient) roundTrip() error {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			return err
		}
		c.conn, c.br = conn, bufio.NewReaderSize(conn, 64<<10)
	}
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("status line %q", bytes.TrimSpace(line))
	}
	length, chunked, closing := -1, false, false
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil {
				return fmt.Errorf("Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			closing = bytes.EqualFold(v, []byte("close"))
		}
	}
	c.body = c.body[:0]
	switch {
	case chunked:
		for {
			line, err := c.br.ReadSlice('\n')
			if err != nil {
				return err
			}
			sz, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
			n, err := strconv.ParseInt(string(sz), 16, 64)
			if err != nil || n < 0 || n > 64<<20 {
				return fmt.Errorf("chunk size %q", sz)
			}
			if n == 0 {
				break
			}
			if c.body, err = readN(c.br, c.body, int(n)); err != nil {
				return err
			}
			if _, err := c.br.Discard(2); err != nil { // CRLF after the chunk
				return err
			}
		}
		for { // trailers, up to the empty line
			line, err := c.br.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(line) <= 2 {
				break
			}
		}
	case length >= 0:
		if c.body, err = readN(c.br, c.body, length); err != nil {
			return err
		}
	default:
		return errors.New("answer has neither Content-Length nor chunked encoding")
	}
	if closing {
		c.close()
	}
	if !bytes.Equal(c.body, c.want) {
		return fmt.Errorf("body of %d bytes differs from the recorded %d bytes", len(c.body), len(c.want))
	}
	return nil
}

// readN appends n bytes from r to b.
func readN(r io.Reader, b []byte, n int) ([]byte, error) {
	l := len(b)
	b = slices.Grow(b, n)[:l+n]
	_, err := io.ReadFull(r, b[l:])
	return b, err
}
