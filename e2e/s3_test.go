package e2e

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/csbs/csbs/internal/repository/blob/s3/s3test"
)

// newS3Env prepares an installation whose repository is in a fresh bucket
// of srv, under the prefix csbs/site-a, with the credentials in the
// standard AWS environment variables.
func newS3Env(t *testing.T, srv *s3test.Server, extra ...string) (*env, string) {
	t.Helper()
	bucket := srv.NewBucket(t)
	e := newEnv(t, append([]string{
		"--repository-url", "s3://" + bucket + "/csbs/site-a",
		"--repository-s3-endpoint", srv.Endpoint,
		"--repository-s3-region", s3test.Region,
	}, extra...)...)
	e.environ = []string{"AWS_ACCESS_KEY_ID=" + s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.SecretKey}
	return e, bucket
}

// bucketBytes sums the sizes of the objects under prefix.
func bucketBytes(t *testing.T, c *minio.Client, bucket, prefix string) (n int64, count int) {
	t.Helper()
	for obj := range c.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		n += obj.Size
		count++
	}
	return n, count
}

// TestObjectStorage runs the real binary with its repository in a bucket of
// versitygw: a full and an incremental backup, restores byte-exactly, a
// delete whose garbage collection shrinks the bucket, and csbs repo ls on
// the bucket. The data lands in the bucket, not in data_dir, and the
// secret key shows nowhere in the log.
func TestObjectStorage(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	e, bucket := newS3Env(t, srv)
	paths := e.addServer(serverID, project, "ACTIVE", 32*mib, 16*mib)
	e.start()
	c := srv.Client(t)

	_, first := e.protect(project, serverID, nil)
	e.waitStatus(project, first, 60*time.Second, "available")
	want1 := hashes(t, paths)
	if _, n := bucketBytes(t, c, bucket, "csbs/site-a/snapshots/"); n != 1 {
		t.Fatalf("%d snapshots in the bucket after one backup, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "repository")); err == nil {
		t.Fatal("data_dir/repository exists: the repository is not (only) in the bucket")
	}

	// Incremental: new random data the first backup lacks.
	overwriteRandom(t, paths[0], 4*mib, 12*mib)
	want2 := hashes(t, paths)
	cp2, second := e.protect(project, serverID, nil)
	it := e.waitStatus(project, second, 60*time.Second, "available")
	if it["extend_info"].(map[string]any)["incremental"] != true {
		t.Fatalf("second backup is not incremental: %v", it["extend_info"])
	}

	scribble(t, paths[0])
	scribble(t, paths[1])
	e.restoreOK(project, e.restoreBody("", first, serverID, false))
	sameHashes(t, "restore of the full backup from S3", paths, want1)
	e.restoreOK(project, e.restoreBody("", second, serverID, false))
	sameHashes(t, "restore of the incremental backup from S3", paths, want2)

	before, _ := bucketBytes(t, c, bucket, "csbs/site-a/")
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cp2, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e.waitStatus(project, second, 30*time.Second, "gone")
	deadline := time.Now().Add(30 * time.Second)
	after := before
	for after > before-10*mib && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		after, _ = bucketBytes(t, c, bucket, "csbs/site-a/")
	}
	if after > before-10*mib {
		t.Fatalf("bucket holds %d bytes before the delete, %d after GC; want at least 10 MiB less", before, after)
	}
	e.restoreOK(project, e.restoreBody("", first, serverID, false))
	sameHashes(t, "restore of the full backup after GC", paths, want1)

	// csbs repo reads the bucket with nothing but the URL, the endpoint,
	// the credentials and the password file.
	ls := exec.Command(binary, "repo", "ls", "--repository-url", "s3://"+bucket+"/csbs/site-a",
		"--password-file", filepath.Join(e.dataDir, "repository.key"))
	ls.Env = append(os.Environ(), "CSBS_REPOSITORY_S3_ENDPOINT="+srv.Endpoint, "CSBS_REPOSITORY_S3_REGION="+s3test.Region,
		"AWS_ACCESS_KEY_ID="+s3test.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3test.SecretKey)
	out, err := ls.CombinedOutput()
	if err != nil || !strings.Contains(string(out), strings.ReplaceAll(first, "-", "")) {
		t.Fatalf("csbs repo ls on S3: %v\n%s", err, out)
	}

	e.stop(syscall.SIGTERM)
	if strings.Contains(e.log(), s3test.SecretKey) {
		t.Fatal("the log contains the S3 secret key")
	}
}

// TestObjectStoreWrongCredentials: serve refuses to start with an error
// naming the bucket and the endpoint, and without the secret.
func TestObjectStoreWrongCredentials(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	cmd := exec.Command(binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--compute-inventory", filepath.Join(t.TempDir(), "none.yaml"),
		"--repository-url", "s3://"+bucket, "--repository-s3-endpoint", srv.Endpoint)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret-for-the-test")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("serve started with wrong credentials")
	}
	msg := string(out)
	if !strings.Contains(msg, bucket) || !strings.Contains(msg, srv.Addr) || !strings.Contains(msg, "refused access") {
		t.Fatalf("serve's error does not name the bucket, the endpoint and the refusal:\n%s", msg)
	}
	if strings.Contains(msg, "wrong-secret-for-the-test") {
		t.Fatalf("serve's error shows the secret:\n%s", msg)
	}
}

// TestObjectStoreOutage kills versitygw in the middle of a backup: the
// backup ends in error with a reason naming the object store, the API
// keeps answering, and once the store is back the earlier backup still
// restores and the next backup succeeds.
func TestObjectStoreOutage(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	e, _ := newS3Env(t, srv)
	paths := e.addServer(serverID, project, "ACTIVE", 16*mib)
	e.start()

	_, good := e.protect(project, serverID, nil)
	e.waitStatus(project, good, 60*time.Second, "available")
	want := hashes(t, paths)

	// A disk large enough that the backup still runs when the store dies.
	big := "5f0c7a4e-1b2d-4c3e-9f8a-7b6c5d4e3f2a"
	bigPaths := e.addServer(big, project, "ACTIVE", 512*mib)
	fillRandom(t, bigPaths[0], 512*mib)
	_, doomed := e.protect(project, big, nil)
	e.waitStatus(project, doomed, 30*time.Second, "protecting")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		it := e.item(project, doomed)
		if it["status"] != "protecting" {
			t.Skipf("the backup ended %v before the store could be stopped; the machine is too fast for this size", it["status"])
		}
		if p, _ := it["extend_info"].(map[string]any)["progress"].(float64); p >= 5 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.Kill()
	killed := time.Now()

	it := e.waitStatus(project, doomed, 120*time.Second, "available", "error")
	t.Logf("the backup ended %v %s after the store was killed", it["status"], time.Since(killed).Round(time.Millisecond))
	ei := it["extend_info"].(map[string]any)
	if it["status"] != "error" {
		t.Fatalf("backup with the object store down ended %v, want error", it["status"])
	}
	reason, _ := ei["fail_reason"].(string)
	if !strings.Contains(reason, "object store") || !strings.Contains(reason, srv.Addr) {
		t.Fatalf("fail_reason %q does not name the object store %s", reason, srv.Addr)
	}
	if strings.Contains(reason, s3test.SecretKey) {
		t.Fatalf("fail_reason shows the secret: %q", reason)
	}
	t.Logf("fail_reason: %s", reason)
	// The API keeps answering while the store is down.
	if n := e.count(project, ""); n != 2 {
		t.Fatalf("count %d while the store is down, want 2", n)
	}
	if it := e.item(project, good); it["status"] != "available" {
		t.Fatalf("the earlier backup is %v while the store is down", it["status"])
	}

	srv.Restart(t)
	scribble(t, paths[0])
	e.restoreOK(project, e.restoreBody("", good, serverID, false))
	sameHashes(t, "restore of the earlier backup after the outage", paths, want)

	// The next backup succeeds (and restores).
	overwriteRandom(t, paths[0], 0, 4*mib)
	want2 := hashes(t, paths)
	_, next := e.protect(project, serverID, nil)
	e.waitStatus(project, next, 60*time.Second, "available")
	scribble(t, paths[0])
	e.restoreOK(project, e.restoreBody("", next, serverID, false))
	sameHashes(t, "restore of the backup made after the outage", paths, want2)
}

// overwriteRandom writes n random bytes at off of the image at path.
func overwriteRandom(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	rand.Read(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
