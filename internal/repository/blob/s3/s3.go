// Package s3 stores repository objects in a bucket of any S3-compatible
// object store (Amazon S3, MinIO, versitygw, Ceph RGW...), through minio-go.
// Keys live under an optional prefix, with the layout of a local repository:
//
//	<prefix>/config
//	<prefix>/keys/<id>
//	<prefix>/data/<first 2 hex digits of id>/<id>
//	<prefix>/index/<id>
//	<prefix>/snapshots/<id>
//	<prefix>/leases/<id>
//	<prefix>/quarantine/<id>
//	<prefix>/damaged/<id>
//
// ModTime is the object's LastModified, truncated to whole seconds (what a
// HEAD request tells), so a repository on S3 needs a GC margin of more than
// a second.
//
// Atomicity comes from the store, not from renames: a PUT creates a complete
// object or nothing, and a multipart upload becomes visible only when it is
// completed, so a reader never sees a partial object. Nothing relies on
// rename, flock or access times. A failed multipart upload is aborted; one
// left by a crash is aborted by RemoveStaleTemp (which the repository's GC
// calls).
//
// # Retries
//
// Every request (HEAD, GET, PUT, each part of a multipart upload, complete,
// DELETE, each page of a listing) is retried by minio-go on network errors
// (connection refused or reset, timeouts: 10 s to connect, 1 min for a
// response's headers) and on HTTP 408, 429, 499, 500, 502, 503, 504 and 520
// or the S3 codes InternalError, SlowDown, RequestTimeout, Throttling and
// their kin: up to Config.Retries attempts (default 10) with exponential
// backoff (200 ms doubling, at most 1 s between attempts, full jitter), so an
// outage of more than a few seconds fails the operation. A GET whose body
// breaks off, or delivers nothing for Config.StallTimeout (30 s), is resumed
// from the byte reached, at most 3 times. Nothing else is retried: access
// denied, a missing bucket or object, an invalid request. Every upload
// request carries the signed SHA-256 of its body, so the store refuses a
// body damaged in transit (see upload.go).
//
// # Memory
//
// Uploads of all objects together use at most Config.Threads buffers of
// Config.PartSize bytes (4 x 8 MiB by default); downloads are streamed to
// the caller without buffering.
//
// Every error other than a missing object names the object store (endpoint
// and bucket) and the object, and never contains the secret key.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/csbs/csbs/internal/repository/blob"
)

// Config says where the repository is and how to reach it.
type Config struct {
	// Endpoint is the store's address: "http://host:port" or
	// "https://host[:port]"; a bare "host[:port]" means https. Empty means
	// Amazon S3 (s3.amazonaws.com).
	Endpoint string
	Bucket   string
	// Prefix is prepended to every key ("a/b" puts config at a/b/config);
	// empty means the bucket's root.
	Prefix string
	// Region of the bucket; empty lets the client ask the store.
	Region    string
	AccessKey string
	SecretKey string // never printed

	// PartSize is the size of a multipart upload's parts and of the
	// largest object sent with one PUT; default 8 MiB, at least 5 MiB (S3's
	// minimum).
	PartSize int64
	// Threads is how many parts (of all uploads together) are in flight at
	// once, each in a buffer of PartSize bytes: the memory uploads take.
	// Default 4.
	Threads int
	Retries int // attempts per request; default 10
	// StallTimeout cuts (and resumes) a download whose body delivers
	// nothing for that long; default 30 s.
	StallTimeout time.Duration
}

// Backend is a blob.Backend on a bucket.
type Backend struct {
	client       *minio.Client
	core         minio.Core
	tr           *http.Transport
	bucket       string
	prefix       string // "" or ending in "/"
	endpoint     string // for messages: scheme://host
	partSize     int64
	parts        chan []byte // Threads part buffers, allocated on first use
	stallTimeout time.Duration
}

var _ blob.Backend = (*Backend)(nil)

const (
	defaultPartSize = 8 << 20
	minPartSize     = 5 << 20
	loadResumes     = 3
)

// ParseEndpoint splits an endpoint into host[:port] and whether to use TLS.
func ParseEndpoint(endpoint string) (host string, secure bool, err error) {
	switch {
	case endpoint == "":
		return "s3.amazonaws.com", true, nil
	case strings.Contains(endpoint, "://"):
		u, err := url.Parse(endpoint)
		if err != nil {
			return "", false, fmt.Errorf("endpoint %q: %w", endpoint, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return "", false, fmt.Errorf("endpoint %q: scheme must be http or https", endpoint)
		}
		if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return "", false, fmt.Errorf("endpoint %q: want scheme://host[:port] without path, query or user", endpoint)
		}
		return u.Host, u.Scheme == "https", nil
	default:
		if strings.ContainsAny(endpoint, "/?@ ") {
			return "", false, fmt.Errorf("endpoint %q: want host[:port] or scheme://host[:port]", endpoint)
		}
		return endpoint, true, nil
	}
}

// Open connects to the bucket cfg names and checks that it exists and that
// the credentials are accepted. Its errors name the bucket and the endpoint
// and say what to check; they never contain the secret key.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	host, secure, err := ParseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("object store: %w", err)
	}
	scheme := "http"
	if secure {
		scheme = "https"
	}
	b := &Backend{
		bucket:       cfg.Bucket,
		prefix:       strings.Trim(cfg.Prefix, "/"),
		endpoint:     scheme + "://" + host,
		partSize:     defaultPartSize,
		stallTimeout: cfg.StallTimeout,
	}
	if b.stallTimeout <= 0 {
		b.stallTimeout = 30 * time.Second
	}
	if b.prefix != "" {
		b.prefix += "/"
	}
	if cfg.PartSize > 0 {
		b.partSize = max(cfg.PartSize, minPartSize)
	}
	threads := 4
	if cfg.Threads > 0 {
		threads = cfg.Threads
	}
	b.parts = make(chan []byte, threads)
	for range threads {
		b.parts <- nil
	}
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("object store %s: no bucket given", b.endpoint)
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	b.tr = tr
	retries := cfg.Retries
	if retries <= 0 {
		retries = minio.MaxRetry
	}
	b.client, err = minio.New(host, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:     secure,
		Region:     cfg.Region,
		Transport:  tr,
		MaxRetries: retries,
	})
	if err != nil {
		return nil, fmt.Errorf("object store %s, bucket %q: %w", b.endpoint, cfg.Bucket, err)
	}
	b.core = minio.Core{Client: b.client}
	ok, err := b.client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, b.openError(err, cfg.AccessKey)
	}
	if !ok {
		// A HEAD reply has no body, and some stores answer 404 to unknown
		// credentials too: a listing's error body tells which it is.
		_, err := b.core.ListObjectsV2(cfg.Bucket, b.prefix, "", "", "", 1)
		if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchBucket {
			return nil, b.openError(err, cfg.AccessKey)
		}
		return nil, fmt.Errorf("object store %s: bucket %q does not exist: create it, or fix repository.url", b.endpoint, cfg.Bucket)
	}
	return b, nil
}

// openError explains why the bucket could not be checked: the store
// answered with an error (credentials or policy: stores differ in the codes
// they use, e.g. versitygw answers XAdminUserNotFound to an unknown access
// key) or did not answer at all.
func (b *Backend) openError(err error, accessKey string) error {
	if minio.ToErrorResponse(err).StatusCode != 0 {
		return fmt.Errorf("object store %s refused access to bucket %q with access key %q (%v): check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or repository.s3.access_key/secret_key) and the bucket's policy",
			b.endpoint, b.bucket, accessKey, err)
	}
	return fmt.Errorf("object store %s, bucket %q, is unreachable: %w: check repository.s3.endpoint and that the store is up", b.endpoint, b.bucket, err)
}

// Location returns s3://bucket/prefix at the endpoint.
func (b *Backend) Location() string {
	return fmt.Sprintf("s3://%s/%s (%s)", b.bucket, strings.TrimSuffix(b.prefix, "/"), b.endpoint)
}

// dirs are the key prefixes of the object types, as in a local repository.
var dirs = map[blob.FileType]string{
	blob.KeyFile:        "keys/",
	blob.PackFile:       "data/",
	blob.IndexFile:      "index/",
	blob.SnapshotFile:   "snapshots/",
	blob.LeaseFile:      "leases/",
	blob.QuarantineFile: "quarantine/",
	blob.DamagedFile:    "damaged/",
}

// storeTime returns an object's LastModified at whole seconds: HEAD
// answers in seconds (an HTTP date), listings in milliseconds, and the
// repository compares times from both.
func storeTime(t time.Time) time.Time { return t.Truncate(time.Second) }

// key returns the object key of h.
func (b *Backend) key(h blob.Handle) string {
	switch h.Type {
	case blob.ConfigFile:
		return b.prefix + "config"
	case blob.PackFile:
		return b.prefix + "data/" + h.Name[:2] + "/" + h.Name
	}
	return b.prefix + dirs[h.Type] + h.Name
}

func (b *Backend) check(h blob.Handle) error {
	if !h.Valid() {
		return fmt.Errorf("invalid object name %q for type %v", h.Name, h.Type)
	}
	return nil
}

// wrap turns a client error into one naming the store, with a missing
// object matching fs.ErrNotExist.
func (b *Backend) wrap(op string, h blob.Handle, err error) error {
	if isNotExist(err) {
		return fmt.Errorf("%s %v: %w", op, h, fs.ErrNotExist)
	}
	return &StoreError{Op: op, Object: h.String(), Bucket: b.bucket, Endpoint: b.endpoint, Err: err}
}

// StoreError is a failure of the object store (as opposed to a missing
// object): unreachable after the retries, access denied, or an error reply.
type StoreError struct {
	Op, Object, Bucket, Endpoint string
	Err                          error
}

func (e *StoreError) Error() string {
	return fmt.Sprintf("object store %s, bucket %q: %s %s: %v", e.Endpoint, e.Bucket, e.Op, e.Object, e.Err)
}

func (e *StoreError) Unwrap() error { return e.Err }

func isNotExist(err error) bool {
	switch minio.ToErrorResponse(err).Code {
	case minio.NoSuchKey, "NotFound":
		return true
	}
	return false
}

// Save uploads rd as h (see upload.go for how). Readers that can seek and
// read at offsets (files, byte slices: what the repository passes) are
// read in place, part by part, so memory does not grow with the object;
// other readers are first copied to a temporary file. A failed upload
// leaves no object and the previous object of the same name, if any,
// intact.
func (b *Backend) Save(ctx context.Context, h blob.Handle, rd io.Reader) error {
	if err := b.check(h); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	src, size, cleanup, err := seekable(rd)
	if err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	defer cleanup()
	if err := b.upload(ctx, b.key(h), src, size); err != nil {
		return b.wrap("save", h, err)
	}
	return nil
}

// readerAtSeeker can be uploaded without buffering and rewound to retry.
type readerAtSeeker interface {
	io.ReaderAt
	io.Seeker
}

// seekable returns rd's remaining bytes as a SectionReader and their
// length, copying rd to a temporary file first if it cannot seek.
func seekable(rd io.Reader) (*io.SectionReader, int64, func(), error) {
	if r, ok := rd.(readerAtSeeker); ok {
		pos, err := r.Seek(0, io.SeekCurrent)
		if err == nil {
			var end int64
			if end, err = r.Seek(0, io.SeekEnd); err == nil {
				_, err = r.Seek(pos, io.SeekStart)
			}
			if err == nil {
				return io.NewSectionReader(r, pos, end-pos), end - pos, func() {}, nil
			}
		}
	}
	f, err := blob.AnonymousTemp("csbs-s3-")
	if err != nil {
		return nil, 0, nil, err
	}
	cleanup := func() { f.Close() }
	n, err := io.Copy(f, rd)
	if err != nil {
		cleanup()
		return nil, 0, nil, err
	}
	return io.NewSectionReader(f, 0, n), n, cleanup, nil
}

// Load fetches the requested range of h with one GET and calls fn with its
// body. A range starting at or past the end of the object delivers no bytes.
// A body that breaks off is resumed where it stopped (see the package doc).
func (b *Backend) Load(ctx context.Context, h blob.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := b.check(h); err != nil {
		return err
	}
	if length < 0 || offset < 0 {
		return fmt.Errorf("load %v: negative length or offset", h)
	}
	r := &resumingReader{ctx: ctx, b: b, h: h, off: offset, remaining: int64(length)}
	if length == 0 {
		r.remaining = -1
	}
	if err := r.open(); err != nil {
		if errors.Is(err, errEmptyRange) {
			return fn(bytes.NewReader(nil))
		}
		return err
	}
	defer r.close()
	return fn(r)
}

var errEmptyRange = errors.New("empty range")

// resumingReader reads [off, off+remaining) of an object (remaining -1: to
// the end), reopening the GET at the byte reached when the body fails.
type resumingReader struct {
	ctx       context.Context
	b         *Backend
	h         blob.Handle
	off       int64 // next byte to deliver
	remaining int64 // bytes left, -1 for up to the end
	etag      string
	body      io.ReadCloser
	cancel    context.CancelFunc // ends body's request
	stall     *time.Timer        // calls cancel when body stalls
	resumes   int
}

func (r *resumingReader) open() error {
	var opts minio.GetObjectOptions
	var err error
	switch {
	case r.remaining > 0:
		err = opts.SetRange(r.off, r.off+r.remaining-1)
	case r.off > 0:
		err = opts.SetRange(r.off, 0)
	}
	if err == nil && r.etag != "" {
		// The object must not change between the pieces of one read.
		err = opts.SetMatchETag(r.etag)
	}
	if err != nil {
		return fmt.Errorf("load %v: %w", r.h, err)
	}
	rctx, cancel := context.WithCancel(r.ctx)
	body, info, _, err := r.b.core.GetObject(rctx, r.b.bucket, r.b.key(r.h), opts)
	if err != nil {
		cancel()
		if minio.ToErrorResponse(err).Code == "InvalidRange" {
			return errEmptyRange
		}
		return r.b.wrap("load", r.h, err)
	}
	r.body, r.cancel = body, cancel
	// A body that stops arriving is cut after StallTimeout and resumed.
	r.stall = time.AfterFunc(r.b.stallTimeout, cancel)
	r.stall.Stop() // armed only while Read waits for the body
	if r.etag == "" {
		r.etag = info.ETag
	}
	return nil
}

func (r *resumingReader) Read(p []byte) (int, error) {
	if r.remaining == 0 {
		return 0, io.EOF
	}
	if r.remaining > 0 && int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	for {
		if r.body == nil {
			if err := r.open(); err != nil {
				if errors.Is(err, errEmptyRange) {
					return 0, io.EOF
				}
				return 0, err
			}
		}
		r.stall.Reset(r.b.stallTimeout)
		n, err := r.body.Read(p)
		r.stall.Stop()
		r.off += int64(n)
		if r.remaining > 0 {
			r.remaining -= int64(n)
		}
		if err == nil || err == io.EOF || n > 0 {
			if err == io.EOF && r.remaining > 0 {
				// Short object: the caller sees fewer bytes.
				r.remaining = 0
			}
			if err != nil && err != io.EOF {
				// Deliver the bytes now; the error shows (and is resumed)
				// on the next Read.
				r.close()
				err = nil
			}
			return n, err
		}
		r.close()
		if r.resumes >= loadResumes || r.ctx.Err() != nil {
			return 0, r.b.wrap("load", r.h, err)
		}
		r.resumes++
		select {
		case <-time.After(time.Duration(r.resumes) * 200 * time.Millisecond):
		case <-r.ctx.Done():
			return 0, r.b.wrap("load", r.h, r.ctx.Err())
		}
	}
}

func (r *resumingReader) close() {
	if r.body != nil {
		r.stall.Stop()
		r.body.Close()
		r.cancel()
		r.body = nil
	}
}

// Stat returns the size of h (one HEAD request).
func (b *Backend) Stat(ctx context.Context, h blob.Handle) (blob.FileInfo, error) {
	if err := b.check(h); err != nil {
		return blob.FileInfo{}, err
	}
	info, err := b.client.StatObject(ctx, b.bucket, b.key(h), minio.StatObjectOptions{})
	if err != nil {
		return blob.FileInfo{}, b.wrap("stat", h, err)
	}
	return blob.FileInfo{Name: h.Name, Size: info.Size, ModTime: storeTime(info.LastModified)}, nil
}

// Remove deletes h. S3 reports success when deleting a missing key, so a
// HEAD first tells whether h exists, as the blob.Backend contract requires.
func (b *Backend) Remove(ctx context.Context, h blob.Handle) error {
	if _, err := b.Stat(ctx, h); err != nil {
		return err
	}
	if err := b.client.RemoveObject(ctx, b.bucket, b.key(h), minio.RemoveObjectOptions{}); err != nil {
		return b.wrap("remove", h, err)
	}
	return nil
}

// List lists the keys under t's prefix (one request per 1,000 keys).
// Keys that are not valid object names of t (stray objects, a pack under
// the wrong data/xx/) are skipped.
func (b *Backend) List(ctx context.Context, t blob.FileType, fn func(blob.FileInfo) error) error {
	if t == blob.ConfigFile {
		fi, err := b.Stat(ctx, blob.Handle{Type: t})
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(blob.FileInfo{Name: "config", Size: fi.Size, ModTime: fi.ModTime})
	}
	dir, ok := dirs[t]
	if !ok {
		return fmt.Errorf("list: unknown type %v", t)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine when fn fails
	prefix := b.prefix + dir
	for obj := range b.client.ListObjects(lctx, b.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return &StoreError{Op: "list", Object: prefix, Bucket: b.bucket, Endpoint: b.endpoint, Err: obj.Err}
		}
		name := strings.TrimPrefix(obj.Key, prefix)
		if t == blob.PackFile {
			sub, n, ok := strings.Cut(name, "/")
			if !ok || len(sub) != 2 || !strings.HasPrefix(n, sub) {
				continue
			}
			name = n
		}
		if h := (blob.Handle{Type: t, Name: name}); !h.Valid() {
			continue
		}
		if err := fn(blob.FileInfo{Name: name, Size: obj.Size, ModTime: storeTime(obj.LastModified)}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// RemoveStaleTemp aborts multipart uploads under the prefix started more
// than olderThan ago (left by a crash or a lost connection; the store keeps
// their parts until then) and returns the bytes their parts held, as far as
// the store reports them.
func (b *Backend) RemoveStaleTemp(ctx context.Context, olderThan time.Duration) (int64, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var freed int64
	for up := range b.client.ListIncompleteUploads(lctx, b.bucket, b.prefix, true) {
		if up.Err != nil {
			return freed, &StoreError{Op: "list uploads", Object: b.prefix, Bucket: b.bucket, Endpoint: b.endpoint, Err: up.Err}
		}
		if time.Since(up.Initiated) < olderThan {
			continue
		}
		if err := b.core.AbortMultipartUpload(ctx, b.bucket, up.Key, up.UploadID); err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" {
			return freed, &StoreError{Op: "abort upload of", Object: up.Key, Bucket: b.bucket, Endpoint: b.endpoint, Err: err}
		}
		freed += up.Size
	}
	return freed, nil
}

// Close releases idle connections.
func (b *Backend) Close() error {
	b.tr.CloseIdleConnections()
	return nil
}
