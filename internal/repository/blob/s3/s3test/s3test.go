// Package s3test runs a real S3 server for tests: versitygw with its posix
// backend on a temporary directory, listening on a free loopback port.
//
// The versitygw binary is looked up in PATH and in $GOPATH/bin (where
// scripts/test.sh installs it). When it is missing, tests that need it are
// skipped with a message, unless CSBS_REQUIRE_S3=1 (set by scripts/test.sh),
// in which case they fail: CI must not pass by skipping the object store.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/csbs/csbs/internal/repository/blob/s3"
)

// The root credentials of every test server. They are not secrets, but the
// tests check that SecretKey never shows in an error or a log.
const (
	AccessKey = "csbstestaccess"
	SecretKey = "csbs-test-secret-Zq8v2Lr7"
	Region    = "us-east-1"
)

// Binary returns the path of versitygw, or "" if it is not installed.
func Binary() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		gopath = build.Default.GOPATH
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Require skips t when versitygw is not installed (fails it when
// CSBS_REQUIRE_S3=1) and returns the binary's path.
func Require(t testing.TB) string {
	t.Helper()
	bin := Binary()
	if bin == "" {
		msg := "versitygw not installed (scripts/test.sh installs it: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)"
		if os.Getenv("CSBS_REQUIRE_S3") == "1" {
			t.Fatal(msg + "; CSBS_REQUIRE_S3=1 requires the S3 tests")
		}
		t.Skip(msg)
	}
	return bin
}

// Server is a running versitygw.
type Server struct {
	Endpoint string // http://127.0.0.1:port
	Addr     string // 127.0.0.1:port
	Dir      string // the posix backend's root: one directory per bucket

	bin     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	out     *bytes.Buffer
	buckets atomic.Int64
}

// Start starts a versitygw for t; it is killed when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Launch(Require(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Launch starts the versitygw binary bin serving dir (its posix backend)
// on a free loopback port. The caller must Kill it. Tests use Start;
// Launch is for programs such as benchmarks.
func Launch(bin, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{bin: bin, Dir: dir}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.Addr = l.Addr().String()
	l.Close()
	s.Endpoint = "http://" + s.Addr
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("versitygw on %s is already running", s.Addr)
	}
	var out bytes.Buffer
	cmd := exec.Command(s.bin, "--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", s.Addr, "--quiet", "posix", s.Dir)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start versitygw: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			return fmt.Errorf("versitygw exited at start: %s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("versitygw did not listen on %s within 15 s: %s", s.Addr, out.String())
		}
	}
	s.cmd, s.done, s.out = cmd, done, &out
	return nil
}

// Pid returns the server's process id, 0 when it is not running.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Kill stops the server with SIGKILL (an object store that vanishes) and
// waits for it to exit. The data stays in Dir.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same address and directory.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	var err error
	for range 50 { // the port may linger briefly after the kill
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal(err)
}

// Client returns a minio client for the server's root account.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := s.client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *Server) client() (*minio.Client, error) {
	return minio.New(s.Addr, &minio.Options{
		Creds:  credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Region: Region,
	})
}

// NewBucket creates a bucket with a fresh name and returns it.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := "csbs-test-" + strconv.FormatInt(s.buckets.Add(1), 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.CreateBucket(ctx, name); err != nil {
		t.Fatal(err)
	}
	return name
}

// CreateBucket creates the bucket name.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	c, err := s.client()
	if err == nil {
		err = c.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region})
	}
	if err != nil {
		return fmt.Errorf("create bucket %s on versitygw %s: %w", name, s.Endpoint, err)
	}
	return nil
}

// Config returns the configuration of a backend on bucket under prefix.
func (s *Server) Config(bucket, prefix string) s3.Config {
	return s3.Config{
		Endpoint:  s.Endpoint,
		Bucket:    bucket,
		Prefix:    prefix,
		Region:    Region,
		AccessKey: AccessKey,
		SecretKey: SecretKey,
	}
}

// NewBackend creates a bucket and opens a backend on it under prefix,
// closed when t ends.
func (s *Server) NewBackend(t testing.TB, prefix string) *s3.Backend {
	t.Helper()
	be, err := s3.Open(context.Background(), s.Config(s.NewBucket(t), prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}
