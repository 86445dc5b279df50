package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/blobtest"
	"github.com/csbs/csbs/internal/repository/blob/s3"
	"github.com/csbs/csbs/internal/repository/blob/s3/s3test"
)

// TestConformance runs the blob.Backend conformance suite on versitygw, one
// bucket per subtest, with keys under a prefix.
func TestConformance(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	blobtest.Run(t, func(t *testing.T) blob.Backend {
		be := srv.NewBackend(t, "repo/one")
		t.Cleanup(func() {
			// A failed Save aborts its multipart upload.
			n, err := be.RemoveStaleTemp(context.Background(), 0)
			if err != nil || n != 0 {
				t.Errorf("incomplete uploads left: %d bytes, %v", n, err)
			}
		})
		return be
	})
}

// TestLayout checks the keys: the same layout as a local repository, under
// the prefix, and nothing outside it is listed.
func TestLayout(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	ctx := context.Background()
	be, err := s3.Open(ctx, srv.Config(bucket, "/a/b/"))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	for _, h := range []blob.Handle{
		{Type: blob.ConfigFile},
		{Type: blob.KeyFile, Name: "aa01"},
		{Type: blob.PackFile, Name: "ab0123"},
		{Type: blob.IndexFile, Name: "ab0123"},
		{Type: blob.SnapshotFile, Name: "ff"},
	} {
		if err := be.Save(ctx, h, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
	}
	c := srv.Client(t)
	// Stray objects: outside the prefix, a pack under the wrong data/xx/.
	for _, k := range []string{"a/other/index/abcd", "a/b/data/cd/ab9999", "a/b/index/README"} {
		if _, err := c.PutObject(ctx, bucket, k, strings.NewReader("y"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	for obj := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "a/b/", Recursive: true}) {
		keys = append(keys, obj.Key)
	}
	want := "a/b/config a/b/data/ab/ab0123 a/b/data/cd/ab9999 a/b/index/README a/b/index/ab0123 a/b/keys/aa01 a/b/snapshots/ff"
	if got := strings.Join(keys, " "); got != want {
		t.Fatalf("keys = %s\nwant   %s", got, want)
	}
	for ft, want := range map[blob.FileType]string{blob.PackFile: "ab0123", blob.IndexFile: "ab0123"} {
		var names []string
		be.List(ctx, ft, func(fi blob.FileInfo) error { names = append(names, fi.Name); return nil })
		if strings.Join(names, " ") != want {
			t.Errorf("list %v = %v, want [%s]", ft, names, want)
		}
	}
	if loc := be.Location(); !strings.Contains(loc, "s3://"+bucket+"/a/b") || !strings.Contains(loc, srv.Endpoint) {
		t.Errorf("Location() = %q, want the bucket, prefix and endpoint", loc)
	}
}

// TestOpenErrors: a missing bucket, refused credentials and an unreachable
// endpoint each give an error naming the bucket and the endpoint and saying
// what is wrong, without the secret key.
func TestOpenErrors(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	ctx := context.Background()
	wrongSecret := srv.Config(bucket, "")
	wrongSecret.SecretKey = "not-the-secret-Kx93"
	wrongKey := srv.Config(bucket, "")
	wrongKey.AccessKey = "nobody"
	unreachable := srv.Config(bucket, "")
	unreachable.Endpoint = "http://127.0.0.1:1" // nothing listens on port 1
	unreachable.Retries = 2
	for _, c := range []struct {
		name string
		cfg  s3.Config
		want string
	}{
		{"missing bucket", srv.Config("no-such-bucket", ""), `bucket "no-such-bucket" does not exist`},
		{"wrong secret", wrongSecret, "refused access"},
		{"unknown access key", wrongKey, "refused access"},
		{"unreachable", unreachable, "is unreachable"},
	} {
		_, err := s3.Open(ctx, c.cfg)
		if err == nil {
			t.Fatalf("%s: Open succeeded", c.name)
		}
		msg := err.Error()
		if !strings.Contains(msg, c.want) || !strings.Contains(msg, c.cfg.Bucket) || !strings.Contains(msg, strings.TrimPrefix(c.cfg.Endpoint, "http://")) {
			t.Errorf("%s: error %q, want %q with the bucket and endpoint", c.name, msg, c.want)
		}
		if strings.Contains(msg, c.cfg.SecretKey) {
			t.Errorf("%s: error contains the secret key: %q", c.name, msg)
		}
	}
}

// TestRetryOutage: the store goes away and comes back while a Save and a
// Load wait: both succeed thanks to the retries, and an operation during a
// longer outage fails with an error naming the store and the object.
func TestRetryOutage(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	ctx := context.Background()
	cfg := srv.Config(srv.NewBucket(t), "")
	cfg.Retries = 40 // tens of seconds of backoff: more than a restart takes on a loaded machine
	be, err := s3.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	cfg.Retries = 2
	impatient, err := s3.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer impatient.Close()
	h := blob.Handle{Type: blob.SnapshotFile, Name: "abcd"}
	data := bytes.Repeat([]byte("backup "), 1000)
	if err := be.Save(ctx, h, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	restarted := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		srv.Restart(t)
		close(restarted)
	}()
	h2 := blob.Handle{Type: blob.SnapshotFile, Name: "bcde"}
	if err := be.Save(ctx, h2, bytes.NewReader(data)); err != nil {
		t.Fatalf("Save across a short outage: %v", err)
	}
	<-restarted
	var got []byte
	err = be.Load(ctx, h2, 0, 0, func(rd io.Reader) (err error) { got, err = io.ReadAll(rd); return err })
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Load after the outage: %d bytes, %v", len(got), err)
	}

	// A longer outage: fail, naming the store; never fs.ErrNotExist.
	srv.Kill()
	short, err := s3.Open(ctx, s3.Config{}) // no bucket: a configuration error, not a panic
	if err == nil {
		short.Close()
		t.Fatal("Open without a bucket succeeded")
	}
	err = impatient.Load(ctx, h, 0, 0, func(rd io.Reader) error { return nil })
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load with the store down: %v, want a store error", err)
	}
	var se *s3.StoreError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), srv.Addr) || !strings.Contains(err.Error(), h.String()) {
		t.Fatalf("Load with the store down: %q, want a StoreError naming %s and %v", err, srv.Addr, h)
	}
	if strings.Contains(err.Error(), s3test.SecretKey) {
		t.Fatalf("error contains the secret key: %q", err)
	}
	srv.Restart(t)
	if _, err := be.Stat(ctx, h); err != nil {
		t.Fatalf("Stat after the store is back: %v", err)
	}
}

// TestRemoveStaleTemp: an upload abandoned before completion is invisible,
// and RemoveStaleTemp aborts it once old enough.
func TestRemoveStaleTemp(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	ctx := context.Background()
	bucket := srv.NewBucket(t)
	be, err := s3.Open(ctx, srv.Config(bucket, "p"))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	core := minio.Core{Client: srv.Client(t)}
	key := "p/data/ab/ab0123"
	id, err := core.NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	part := bytes.Repeat([]byte{7}, 1<<20)
	if _, err := core.PutObjectPart(ctx, bucket, key, id, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Stat(ctx, blob.Handle{Type: blob.PackFile, Name: "ab0123"}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("an incomplete upload is visible: %v", err)
	}
	if _, err := be.RemoveStaleTemp(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	res, err := core.ListMultipartUploads(ctx, bucket, "p/", "", "", "", 100)
	if err != nil || len(res.Uploads) != 1 {
		t.Fatalf("a fresh upload was aborted (or listing failed): %+v, %v", res.Uploads, err)
	}
	if _, err := be.RemoveStaleTemp(ctx, 0); err != nil {
		t.Fatal(err)
	}
	res, err = core.ListMultipartUploads(ctx, bucket, "p/", "", "", "", 100)
	if err != nil || len(res.Uploads) != 0 {
		t.Fatalf("stale upload not aborted: %+v, %v", res.Uploads, err)
	}
}

func TestParseEndpoint(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in     string
		host   string
		secure bool
		bad    bool
	}{
		{"", "s3.amazonaws.com", true, false},
		{"http://127.0.0.1:7070", "127.0.0.1:7070", false, false},
		{"https://s3.example.com", "s3.example.com", true, false},
		{"https://s3.example.com/", "s3.example.com", true, false},
		{"s3.example.com:9000", "s3.example.com:9000", true, false},
		{"ftp://x", "", false, true},
		{"http://", "", false, true},
		{"http://h/path", "", false, true},
		{"http://user:pw@h", "", false, true},
		{"h/path", "", false, true},
	} {
		host, secure, err := s3.ParseEndpoint(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("ParseEndpoint(%q) = %q, %v; want an error", c.in, host, secure)
			}
			continue
		}
		if err != nil || host != c.host || secure != c.secure {
			t.Errorf("ParseEndpoint(%q) = %q, %v, %v; want %q, %v", c.in, host, secure, err, c.host, c.secure)
		}
	}
}
