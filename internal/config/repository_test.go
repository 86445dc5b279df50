package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRepositoryURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want Location
		err  string // substring of the error; "" for success
	}{
		{"file:///var/lib/csbs/repository", Location{Scheme: "file", Path: "/var/lib/csbs/repository"}, ""},
		{"file:///var/lib/csbs/repository/", Location{Scheme: "file", Path: "/var/lib/csbs/repository"}, ""},
		{"file://csbs-data/repository", Location{Scheme: "file", Path: "csbs-data/repository"}, ""},
		{"file://./csbs-data/repository", Location{Scheme: "file", Path: "csbs-data/repository"}, ""},
		{"s3://backups", Location{Scheme: "s3", Bucket: "backups"}, ""},
		{"s3://backups/", Location{Scheme: "s3", Bucket: "backups"}, ""},
		{"s3://backups/csbs/site-a", Location{Scheme: "s3", Bucket: "backups", Prefix: "csbs/site-a"}, ""},
		{"s3://backups/csbs/site-a/", Location{Scheme: "s3", Bucket: "backups", Prefix: "csbs/site-a"}, ""},
		{"s3://my.backups-1/x", Location{Scheme: "s3", Bucket: "my.backups-1", Prefix: "x"}, ""},
		{"", Location{}, "want file:///path or s3://bucket/prefix"},
		{"/var/lib/csbs", Location{}, "want file:///path or s3://bucket/prefix"},
		{"file://", Location{}, "want file:///path"},
		{"file:///x?y", Location{}, "want file:///path"},
		{"http://host/x", Location{}, `scheme "http"`},
		{"s3://", Location{}, "3 to 63 characters"},
		{"s3://ab", Location{}, "3 to 63 characters"},
		{"s3://" + strings.Repeat("a", 64), Location{}, "3 to 63 characters"},
		{"s3://Backups", Location{}, "lowercase"},
		{"s3://-backups", Location{}, "starting and ending"},
		{"s3://back..ups", Location{}, "adjacent dots"},
		{"s3://back_ups", Location{}, "lowercase"},
		{"s3://backups/a//b", Location{}, "plain path segments"},
		{"s3://backups/a/../b", Location{}, "plain path segments"},
		{"s3://backups/a?b", Location{}, "plain path segments"},
	} {
		got, err := ParseRepositoryURL(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "repository.url") {
				t.Errorf("ParseRepositoryURL(%q) = %+v, %v; want an error naming repository.url with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseRepositoryURL(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

// TestRepositoryKeys: the defaults, the legacy repository.path, the AWS
// environment, and the combinations that are refused (naming the key).
func TestRepositoryKeys(t *testing.T) {
	t.Parallel()
	type want struct{ url, path, access, secret, compression string }
	for _, c := range []struct {
		name string
		file string
		env  []string
		want want
		err  string
	}{
		{"default", "", []string{"CSBS_DATA_DIR=/d"}, want{url: "file:///d/repository", path: "/d/repository"}, ""},
		{"legacy path", "repository:\n  path: /srv/repo\n", nil, want{url: "file:///srv/repo", path: "/srv/repo"}, ""},
		{"file url", "repository:\n  url: file:///srv/repo\n", nil, want{url: "file:///srv/repo", path: "/srv/repo"}, ""},
		{"file url and same path", "repository:\n  url: file:///srv/repo/\n  path: /srv/repo\n", nil, want{url: "file:///srv/repo/", path: "/srv/repo"}, ""},
		{"s3 with AWS env", "repository:\n  url: s3://backups/csbs\n  s3:\n    endpoint: http://127.0.0.1:7070\n",
			[]string{"AWS_ACCESS_KEY_ID=AKIA1", "AWS_SECRET_ACCESS_KEY=env-secret-1"}, want{url: "s3://backups/csbs", access: "AKIA1", secret: "env-secret-1"}, ""},
		{"s3 keys beat AWS env", "repository:\n  url: s3://backups\n  s3:\n    access_key: mine\n    secret_key: file-secret-2\n",
			[]string{"AWS_ACCESS_KEY_ID=AKIA1", "AWS_SECRET_ACCESS_KEY=env-secret-1"}, want{url: "s3://backups", access: "mine", secret: "file-secret-2"}, ""},
		{"s2", "repository:\n  compression: s2\n", []string{"CSBS_DATA_DIR=/d"}, want{url: "file:///d/repository", path: "/d/repository", compression: "s2"}, ""},
		{"zstd", "repository:\n  compression: zstd\n", []string{"CSBS_DATA_DIR=/d"}, want{url: "file:///d/repository", path: "/d/repository", compression: "zstd"}, ""},
		{"none from env", "", []string{"CSBS_DATA_DIR=/d", "CSBS_REPOSITORY_COMPRESSION=none"}, want{url: "file:///d/repository", path: "/d/repository", compression: "none"}, ""},
		{"s3 from CSBS env", "", []string{"CSBS_REPOSITORY_URL=s3://backups/p", "CSBS_REPOSITORY_S3_ACCESS_KEY=k", "CSBS_REPOSITORY_S3_SECRET_KEY=env-secret-3"},
			want{url: "s3://backups/p", access: "k", secret: "env-secret-3"}, ""},

		{"path and url disagree", "repository:\n  url: file:///a\n  path: /b\n", nil, want{}, "repository.path"},
		{"path with s3 url", "repository:\n  url: s3://backups\n  path: /b\n", nil, want{}, "repository.path"},
		{"bad url", "repository:\n  url: ftp://x\n", nil, want{}, "repository.url"},
		{"bad bucket", "repository:\n  url: s3://B\n", nil, want{}, "repository.url"},
		{"bad endpoint", "repository:\n  url: s3://backups\n  s3:\n    endpoint: ftp://x\n", nil, want{}, "repository.s3.endpoint"},
		{"endpoint with a directory", "repository:\n  s3:\n    endpoint: http://h:1\n", nil, want{}, "repository.s3.endpoint"},
		{"access key without secret", "repository:\n  url: s3://backups\n  s3:\n    access_key: k\n", nil, want{}, "repository.s3.secret_key"},
		{"secret without access key", "repository:\n  url: s3://backups\n  s3:\n    secret_key: file-secret-4\n", nil, want{}, "repository.s3.access_key"},
		{"unknown codec", "repository:\n  compression: lz4\n", nil, want{}, `repository.compression "lz4"`},
		{"unknown s3 key", "repository:\n  s3:\n    bucket: x\n", nil, want{}, "bucket"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := ""
			if c.file != "" {
				path = filepath.Join(t.TempDir(), "c.yaml")
				writeFile(t, path, c.file)
			}
			cfg, err := Load(path, c.env, nil)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want an error naming %q", err, c.err)
				}
				if strings.Contains(err.Error(), "secret-") {
					t.Fatalf("error leaks a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := cfg.Repository
			got := want{r.URL, r.Path, r.S3.AccessKey, r.S3.SecretKey, r.Compression}
			if c.want.compression == "" {
				c.want.compression = "auto"
			}
			if got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestS3SecretRedacted: printing the configuration never shows the secret.
func TestS3SecretRedacted(t *testing.T) {
	t.Parallel()
	s := S3{Endpoint: "http://h:1", AccessKey: "k", SecretKey: "very-secret-5"}
	r := Repository{URL: "s3://backups", S3: s}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", r, r, r, s), fmt.Sprintf("%+v", Config{Repository: r})} {
		if strings.Contains(out, "very-secret-5") {
			t.Fatalf("printed configuration shows the secret: %s", out)
		}
		if !strings.Contains(out, "(redacted)") {
			t.Fatalf("printed configuration hides that a secret is set: %s", out)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
