package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/s3"
	"github.com/csbs/csbs/internal/repository/blob/s3/s3test"
)

// flakyProxy stands between the backend and versitygw: it answers 503 to
// every failEvery-th request without passing it on, and cuts the body of
// every cutEvery-th object download after half of it.
type flakyProxy struct {
	failEvery, cutEvery int64
	n, gets             atomic.Int64
	failed, cut         atomic.Int64
	proxy               *httputil.ReverseProxy
}

func (p *flakyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.n.Add(1)%p.failEvery == 0 {
		p.failed.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>injected</Message></Error>`)
		return
	}
	p.proxy.ServeHTTP(w, r)
}

// cutReader fails after n bytes, like a connection that breaks.
type cutReader struct {
	rc io.ReadCloser
	n  int64
}

func (c *cutReader) Read(b []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("injected: connection broken")
	}
	if int64(len(b)) > c.n {
		b = b[:c.n]
	}
	k, err := c.rc.Read(b)
	c.n -= int64(k)
	return k, err
}

func (c *cutReader) Close() error { return c.rc.Close() }

// TestFlakyStore: with one request in three answered 503 and one object
// download in two cut off half-way, every operation still succeeds and
// returns the right bytes: requests are retried and downloads resumed.
func TestFlakyStore(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	target, _ := url.Parse(srv.Endpoint)
	p := &flakyProxy{failEvery: 3, cutEvery: 2, proxy: httputil.NewSingleHostReverseProxy(target)}
	p.proxy.ErrorLog = log.New(io.Discard, "", 0)
	p.proxy.ModifyResponse = func(res *http.Response) error {
		if res.Request.Method == http.MethodGet && res.StatusCode/100 == 2 && res.ContentLength > 1000 &&
			!strings.Contains(res.Request.URL.RawQuery, "list-type") && p.gets.Add(1)%p.cutEvery == 0 {
			p.cut.Add(1)
			res.Body = &cutReader{rc: res.Body, n: res.ContentLength / 2}
		}
		return nil
	}
	front := httptest.NewServer(p)
	defer front.Close()
	cfg := srv.Config(bucket, "flaky")
	cfg.Endpoint = front.URL
	cfg.Retries = 20 // with jitter, never 20 injected failures in a row in practice
	ctx := context.Background()
	be, err := s3.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()

	rng := rand.New(rand.NewPCG(1, 2))
	objs := map[blob.Handle][]byte{}
	for i, n := range []int{100, 5000, 1 << 20, 40<<20 + 3} { // the last one is a multipart upload
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		h := blob.Handle{Type: blob.PackFile, Name: "ab" + strings.Repeat("0", i+2)}
		if err := be.Save(ctx, h, bytes.NewReader(b)); err != nil {
			t.Fatalf("save %v (%d bytes) through a flaky store: %v", h, n, err)
		}
		objs[h] = b
	}
	for round := 0; round < 2; round++ {
		for h, want := range objs {
			var got []byte
			err := be.Load(ctx, h, 0, 0, func(rd io.Reader) (err error) { got, err = io.ReadAll(rd); return err })
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("load %v through a flaky store: %d of %d bytes, %v", h, len(got), len(want), err)
			}
			if len(want) > 4096 {
				err = be.Load(ctx, h, 4000, 96, func(rd io.Reader) (err error) { got, err = io.ReadAll(rd); return err })
				if err != nil || !bytes.Equal(got, want[96:4096]) {
					t.Fatalf("load a range of %v through a flaky store: %d bytes, %v", h, len(got), err)
				}
			}
		}
	}
	n := 0
	if err := be.List(ctx, blob.PackFile, func(blob.FileInfo) error { n++; return nil }); err != nil || n != len(objs) {
		t.Fatalf("list through a flaky store: %d objects, %v", n, err)
	}
	for h := range objs {
		if err := be.Remove(ctx, h); err != nil {
			t.Fatalf("remove %v through a flaky store: %v", h, err)
		}
	}
	if p.failed.Load() < 5 || p.cut.Load() < 3 {
		t.Fatalf("the proxy injected only %d 503s and %d cut downloads: the test tests nothing", p.failed.Load(), p.cut.Load())
	}
	t.Logf("%d requests, %d answered 503, %d downloads cut", p.n.Load(), p.failed.Load(), p.cut.Load())
}

// flipReader flips one bit of the byte at offset at.
type flipReader struct {
	rc  io.ReadCloser
	pos int64
	at  int64
}

func (f *flipReader) Read(b []byte) (int, error) {
	n, err := f.rc.Read(b)
	if f.at >= f.pos && f.at < f.pos+int64(n) {
		b[f.at-f.pos] ^= 0x10
	}
	f.pos += int64(n)
	return n, err
}

func (f *flipReader) Close() error { return f.rc.Close() }

// TestDamageInTransit: a proxy flips one bit in the body of every upload
// request. The store refuses every one (each carries the SHA-256 of its
// body), so Save fails and no object exists: a damaged upload never
// becomes a pack that a snapshot could reference.
func TestDamageInTransit(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	target, _ := url.Parse(srv.Endpoint)
	proxy := &httputil.ReverseProxy{
		ErrorLog: log.New(io.Discard, "", 0),
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the signature covers the Host header
			if r := pr.Out; r.Method == http.MethodPut && r.ContentLength > 100 {
				r.Body = &flipReader{rc: r.Body, at: r.ContentLength / 2}
			}
		},
	}
	front := httptest.NewServer(proxy)
	defer front.Close()
	cfg := srv.Config(bucket, "")
	cfg.Endpoint = front.URL
	ctx := context.Background()
	be, err := s3.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	// The proxy passes small bodies untouched: those are saved.
	if err := be.Save(ctx, blob.Handle{Type: blob.IndexFile, Name: "cd"}, bytes.NewReader(make([]byte, 50))); err != nil {
		t.Fatalf("an undamaged upload through the proxy failed: %v", err)
	}
	for i, n := range []int{1000, 40 << 20} { // one PUT; a multipart upload
		h := blob.Handle{Type: blob.PackFile, Name: fmt.Sprintf("cd%04d", i)}
		err := be.Save(ctx, h, bytes.NewReader(make([]byte, n)))
		if err == nil {
			t.Fatalf("save of %d bytes damaged in transit succeeded", n)
		}
		if _, err := be.Stat(ctx, h); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("after a damaged upload of %d bytes, stat = %v; want fs.ErrNotExist", n, err)
		}
	}
}

// stallReader delivers n bytes, then nothing until ctx ends: a connection
// that hangs without breaking.
type stallReader struct {
	rc  io.ReadCloser
	n   int64
	ctx context.Context
}

func (s *stallReader) Read(b []byte) (int, error) {
	if s.n <= 0 {
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	if int64(len(b)) > s.n {
		b = b[:s.n]
	}
	k, err := s.rc.Read(b)
	s.n -= int64(k)
	return k, err
}

func (s *stallReader) Close() error { return s.rc.Close() }

// TestStalledDownload: the first download of an object hangs half-way
// until the client gives up. With StallTimeout the download is cut and
// resumed; without it, Load would wait until its context's deadline.
func TestStalledDownload(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	target, _ := url.Parse(srv.Endpoint)
	var stalled atomic.Int64
	proxy := &httputil.ReverseProxy{
		ErrorLog: log.New(io.Discard, "", 0),
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the signature covers the Host header
		},
		ModifyResponse: func(res *http.Response) error {
			if res.Request.Method == http.MethodGet && res.ContentLength > 1000 && stalled.Add(1) == 1 {
				res.Body = &stallReader{rc: res.Body, n: res.ContentLength / 2, ctx: res.Request.Context()}
			}
			return nil
		},
	}
	front := httptest.NewServer(proxy)
	defer front.Close()
	cfg := srv.Config(bucket, "")
	cfg.Endpoint = front.URL
	cfg.StallTimeout = 200 * time.Millisecond
	ctx := context.Background()
	be, err := s3.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	h := blob.Handle{Type: blob.PackFile, Name: "ef01"}
	want := bytes.Repeat([]byte("chunk of a pack "), 1<<16)
	if err := be.Save(ctx, h, bytes.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var got []byte
	err = be.Load(lctx, h, 0, 0, func(rd io.Reader) (err error) { got, err = io.ReadAll(rd); return err })
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("load with a stalled download: %d of %d bytes, %v", len(got), len(want), err)
	}
	if stalled.Load() < 2 {
		t.Fatalf("%d downloads: the stalled one was not resumed by another", stalled.Load())
	}
}
