// Package config reads the csbs configuration: built-in defaults, then a YAML
// file, then CSBS_… environment variables, then command-line flags, each
// overriding the one before.
//
// Every key has all three spellings, derived from its YAML path:
//
//	compute.inventory  ->  CSBS_COMPUTE_INVENTORY  ->  --compute-inventory
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/csbs/csbs/internal/repository/blob/s3"
)

// Config is the whole configuration of a csbs process.
type Config struct {
	// Listen is the address the API is served on. Default 127.0.0.1:8799.
	Listen string `yaml:"listen"`
	// DataDir holds the SQLite database, the local repository and its key.
	// Default ./csbs-data.
	DataDir string `yaml:"data_dir"`
	// Database is empty for SQLite in DataDir, or a postgres:// URL.
	Database string `yaml:"database"`
	// TLSCert and TLSKey are PEM files; when both are set the API is served
	// over HTTPS. Default empty: HTTP.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`

	Auth       Auth       `yaml:"auth"`
	Compute    Compute    `yaml:"compute"`
	Repository Repository `yaml:"repository"`
	Jobs       Jobs       `yaml:"jobs"`
	Node       Node       `yaml:"node"`
	Policies   Policies   `yaml:"policies"`
	Verify     Verify     `yaml:"verify"`
	Log        Log        `yaml:"log"`
	Quotas     Quotas     `yaml:"quotas"`
}

// Auth says who may call the API.
type Auth struct {
	// Mode is none (any caller, project from the URL; local development
	// only), builtin or keystone. Default none.
	Mode string `yaml:"mode"`
	// AllowInsecureListen lets mode none listen on a non-loopback address.
	// Default false: such a configuration is refused at start.
	AllowInsecureListen bool `yaml:"allow_insecure_listen"`
	// Region is the region named in the token catalog (builtin). Default
	// eu-de.
	Region string `yaml:"region"`
	// PublicURL is the base URL clients reach csbs at, from which the
	// catalog's data-protect endpoint (PublicURL/v1/{project_id}) is made
	// (builtin). Default empty: the scheme and host the client used.
	PublicURL string `yaml:"public_url"`
	// TokenTTL is how long a builtin token is valid. Default 24h.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// TokenKeyFile holds the key builtin tokens are signed with; generated
	// (random, mode 0600) on first start. Processes that share a database
	// must share it. Default DataDir/token.key.
	TokenKeyFile string `yaml:"token_key_file"`
	// Users are the users of the builtin identity (YAML only).
	Users []User `yaml:"users"`
	// KeystoneURL is the external Keystone (keystone mode), e.g.
	// https://iam.example.com/v3. Default empty.
	KeystoneURL string `yaml:"keystone_url"`
	// KeystoneUser, KeystonePassword and KeystoneUserDomain are the service
	// credentials csbs validates tokens with (keystone mode). The user
	// domain defaults to Default.
	KeystoneUser       string `yaml:"keystone_user"`
	KeystonePassword   string `yaml:"keystone_password"`
	KeystoneUserDomain string `yaml:"keystone_user_domain"`
	// KeystoneProject and KeystoneProjectDomain scope the service token
	// (keystone mode). Default empty: unscoped; domain: the user's.
	KeystoneProject       string `yaml:"keystone_project"`
	KeystoneProjectDomain string `yaml:"keystone_project_domain"`
	// KeystoneCacheTTL bounds how long a validated token is trusted without
	// asking Keystone again (keystone mode). Default 5m.
	KeystoneCacheTTL time.Duration `yaml:"keystone_cache_ttl"`
}

// User is a user of the builtin identity.
type User struct {
	// ID is the user id. Default: derived from domain and name.
	ID   string `yaml:"id"`
	Name string `yaml:"name"`
	// Domain is the user's domain name. Default Default.
	Domain string `yaml:"domain"`
	// PasswordHash is a bcrypt hash (csbs hash-password prints one).
	PasswordHash string `yaml:"password_hash"`
	// Password is a clear text password, for development only.
	Password string    `yaml:"password"`
	Projects []Project `yaml:"projects"`
}

// Project is a project a user may scope a token to, with the user's roles
// in it (admin: every project and all_tenants).
type Project struct {
	ID    string   `yaml:"id"`
	Name  string   `yaml:"name"`
	Roles []string `yaml:"roles"`
}

// Compute says where servers come from.
type Compute struct {
	// Driver is the compute driver: "local" (an inventory file) or
	// "libvirt" (KVM domains of a libvirtd). Default local.
	Driver string `yaml:"driver"`
	// Inventory is the local driver's YAML file of servers. Default
	// ./servers.yaml.
	Inventory string `yaml:"inventory"`
	// Local configures the local driver.
	Local Local `yaml:"local"`
	// Libvirt configures the libvirt driver.
	Libvirt Libvirt `yaml:"libvirt"`
}

// Local configures the local compute driver.
type Local struct {
	// KeepClones keeps the reflink clone read by each disk's last backup
	// until the next backup of the disk commits, so that the next backup
	// reads only the extents that changed (compared by FIEMAP). It costs
	// the blocks the disk has rewritten since. Default true.
	KeepClones bool `yaml:"keep_clones"`
}

// Libvirt configures the libvirt compute driver.
type Libvirt struct {
	// URI is libvirtd's connection URI. Default qemu:///system.
	URI string `yaml:"uri"`
	// DefaultProject is the project of domains without csbs metadata;
	// empty (the default): they are invisible.
	DefaultProject string `yaml:"default_project"`
	// ScratchDir holds backup jobs' NBD sockets and scratch images; QEMU
	// must be able to write there. Default /var/tmp/csbs-libvirt.
	ScratchDir string `yaml:"scratch_dir"`
	// ShutdownTimeout is how long a restore waits for an ACPI shutdown
	// before it destroys the domain. Default 2m.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Repository says where backup data is kept.
type Repository struct {
	// URL is file:///path (a directory) or s3://bucket/prefix (an
	// S3-compatible bucket, see S3). Default file://DataDir/repository, or
	// file://Path when Path is set.
	URL string `yaml:"url"`
	// Path of the repository directory: the same as URL file://Path (kept
	// for existing configurations). When URL is a file URL, Path is set
	// from it; giving both with different directories is refused.
	Path string `yaml:"path"`
	// PasswordFile holds the repository password; it is generated (random,
	// mode 0600) on first start when missing. Default DataDir/repository.key.
	PasswordFile string `yaml:"password_file"`
	S3           S3     `yaml:"s3"`
	// LeaseTTL is how long a backup, restore or verify counts as running
	// without a heartbeat (re-saved every LeaseTTL/4): a killed process
	// holds garbage collection back that long. Default 2m.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// GCMargin is how much older than the oldest running operation a pack
	// marked deleted must be before garbage collection removes it. Default
	// 5m; over 1s on S3 (whose times are whole seconds).
	GCMargin time.Duration `yaml:"gc_margin"`
	// Dedup is where identical data is stored once: "project" (default),
	// within each project, so that no project can learn whether another
	// stores some data; or "shared", across all projects (smaller, for
	// single-tenant installations).
	Dedup string `yaml:"dedup"`
	// Compression is how new chunks are compressed: "auto" (default: S2
	// for a disk's first backup, which stores everything and whose time
	// compression bounds; zstd for later ones, which store little and
	// accumulate), "s2" (fast), "zstd" (a third smaller on text, 2.5x the
	// CPU) or "none". Chunks already stored are read whatever it is.
	Compression string `yaml:"compression"`
}

// S3 says how to reach the object store of an s3:// repository URL.
type S3 struct {
	// Endpoint is http://host:port or https://host[:port] (host[:port]
	// alone means https). Default empty: Amazon S3.
	Endpoint string `yaml:"endpoint"`
	// Region of the bucket. Default empty: asked from the store.
	Region string `yaml:"region"`
	// AccessKey and SecretKey are the credentials. Default: the
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables.
	// The secret key is never printed (String redacts it).
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
}

// String shows s without the secret key.
func (s S3) String() string {
	secret := ""
	if s.SecretKey != "" {
		secret = "(redacted)"
	}
	return fmt.Sprintf("{endpoint:%q region:%q access_key:%q secret_key:%s}", s.Endpoint, s.Region, s.AccessKey, secret)
}

// GoString is String, so %#v does not print the secret key either.
func (s S3) GoString() string { return "config.S3" + s.String() }

// Location is a parsed repository URL.
type Location struct {
	Scheme string // "file" or "s3"
	Path   string // file: the directory
	Bucket string // s3
	Prefix string // s3: key prefix without leading or trailing slash; may be empty
}

// ParseRepositoryURL parses a repository.url: file:///abs/path (or
// file://relative/path) or s3://bucket[/prefix].
func ParseRepositoryURL(s string) (Location, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Location{}, fmt.Errorf("repository.url %q: want file:///path or s3://bucket/prefix", s)
	}
	switch scheme {
	case "file":
		if rest == "" || strings.ContainsAny(rest, "?#") {
			return Location{}, fmt.Errorf("repository.url %q: want file:///path/of/the/directory", s)
		}
		return Location{Scheme: "file", Path: filepath.Clean(rest)}, nil
	case "s3":
		bucket, prefix, _ := strings.Cut(rest, "/")
		if err := checkBucket(bucket); err != nil {
			return Location{}, fmt.Errorf("repository.url %q: %w", s, err)
		}
		prefix = strings.Trim(prefix, "/")
		if strings.Contains(prefix, "//") || strings.ContainsAny(prefix, "?#\\") || strings.Contains("/"+prefix+"/", "/../") || strings.Contains("/"+prefix+"/", "/./") {
			return Location{}, fmt.Errorf("repository.url %q: the prefix %q must be plain path segments", s, prefix)
		}
		return Location{Scheme: "s3", Bucket: bucket, Prefix: prefix}, nil
	}
	return Location{}, fmt.Errorf("repository.url %q: scheme %q: want file:// or s3://", s, scheme)
}

// checkBucket applies S3's bucket naming rules.
func checkBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket %q: want 3 to 63 characters", b)
	}
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (c == '-' || c == '.') && i > 0 && i < len(b)-1
		if !ok {
			return fmt.Errorf("bucket %q: want lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit", b)
		}
	}
	if strings.Contains(b, "..") {
		return fmt.Errorf("bucket %q: no two adjacent dots", b)
	}
	return nil
}

// Location parses r.URL (after defaults: Load fills it).
func (r Repository) Location() (Location, error) { return ParseRepositoryURL(r.URL) }

// validate checks the repository keys.
func (r Repository) validate() error {
	loc, err := r.Location()
	if err != nil {
		return err
	}
	if r.LeaseTTL < time.Second {
		return fmt.Errorf("repository.lease_ttl %s: want at least 1s", r.LeaseTTL)
	}
	if r.Dedup != "project" && r.Dedup != "shared" {
		return fmt.Errorf("repository.dedup %q: want project (deduplicate within each project) or shared (across projects)", r.Dedup)
	}
	switch r.Compression {
	case "auto", "s2", "zstd", "none":
	default:
		return fmt.Errorf("repository.compression %q: want auto (S2 for first backups, zstd for later ones), s2 (fast), zstd (smaller, slower) or none", r.Compression)
	}
	if r.GCMargin < time.Millisecond || loc.Scheme == "s3" && r.GCMargin <= time.Second {
		return fmt.Errorf("repository.gc_margin %s: want more than 1s on S3 (its times are whole seconds), at least 1ms on a directory", r.GCMargin)
	}
	switch loc.Scheme {
	case "file":
		if r.Path != "" && filepath.Clean(r.Path) != loc.Path {
			return fmt.Errorf("repository.url %q and repository.path %q name different repositories: set only repository.url", r.URL, r.Path)
		}
		if r.S3.Endpoint != "" {
			return fmt.Errorf("repository.s3.endpoint is set but repository.url %q is a directory: use an s3://bucket/prefix URL or drop the endpoint", r.URL)
		}
	case "s3":
		if r.Path != "" {
			return fmt.Errorf("repository.url %q and repository.path %q name different repositories: set only repository.url", r.URL, r.Path)
		}
		if _, _, err := s3.ParseEndpoint(r.S3.Endpoint); err != nil {
			return fmt.Errorf("repository.s3.endpoint: %w", err)
		}
		if (r.S3.AccessKey == "") != (r.S3.SecretKey == "") {
			return errors.New("repository.s3.access_key and repository.s3.secret_key: set both (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or neither")
		}
	}
	return nil
}

// Jobs tunes the background workers.
type Jobs struct {
	// Workers is how many jobs (backups, deletes, restores) run at once.
	// Default 2.
	Workers int `yaml:"workers"`
	// Lease is how long a job stays owned by a worker without a heartbeat;
	// a crashed worker's jobs are picked up again after it. Default 30s.
	Lease time.Duration `yaml:"lease"`
	// MaxAttempts is how many times a job interrupted by a crash is started
	// before it is failed. Default 3.
	MaxAttempts int `yaml:"max_attempts"`
}

// Node names this process's node when several nodes share one database
// (scale-out: docs/scale-out.md).
type Node struct {
	// Name is the node: processes with the same name have the same compute
	// driver and servers; the jobs of a server run on its node. Default:
	// the hostname when the database is PostgreSQL; on SQLite, unset means
	// a single-node installation (every process runs every job).
	Name string `yaml:"name"`
	// Heartbeat is how often the node tells the others it is up and
	// republishes its servers; it is down after three missed beats.
	// Default 5s.
	Heartbeat time.Duration `yaml:"heartbeat"`
}

// Placement reports the node this process is and whether jobs are placed on
// nodes: yes when node.name is set or the database is PostgreSQL (shared by
// hosts), with the hostname as the default name; no for SQLite without
// node.name, a single-node installation.
func (c Config) Placement() (node string, on bool) {
	if c.Node.Name != "" {
		return c.Node.Name, true
	}
	if c.Database == "" || strings.HasPrefix(c.Database, "sqlite:") {
		return "", false
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return host, true
}

// Policies tunes backup policies and their scheduler.
type Policies struct {
	// Tick is how often the scheduler looks for fire times that have come;
	// a backup starts at most this long after its time. Default 10s.
	Tick time.Duration `yaml:"tick"`
}

// Log configures logging.
type Log struct {
	// Format is text or json. Default text.
	Format string `yaml:"format"`
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
}

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		Listen:  "127.0.0.1:8799",
		DataDir: "./csbs-data",
		Auth:    Auth{Mode: "none", Region: "eu-de", TokenTTL: 24 * time.Hour, KeystoneCacheTTL: 5 * time.Minute},
		Compute: Compute{Driver: "local", Inventory: "./servers.yaml", Local: Local{KeepClones: true}, Libvirt: Libvirt{
			URI: "qemu:///system", ScratchDir: "/var/tmp/csbs-libvirt", ShutdownTimeout: 2 * time.Minute}},
		Jobs:       Jobs{Workers: 2, Lease: 30 * time.Second, MaxAttempts: 3},
		Node:       Node{Heartbeat: 5 * time.Second},
		Policies:   Policies{Tick: 10 * time.Second},
		Verify:     Verify{Schedule: "FREQ=DAILY;BYHOUR=3;BYMINUTE=0", MaxAge: 7 * 24 * time.Hour},
		Log:        Log{Format: "text", Level: "info"},
		Quotas:     Quotas{Backups: 600, BackupCapacityGB: -1, Policies: 32},
		Repository: Repository{LeaseTTL: 2 * time.Minute, GCMargin: 5 * time.Minute, Dedup: "project", Compression: "auto"},
	}
}

// Load builds the configuration from defaults, the file at path (skipped
// when path is ""), the environment and the flags in args. It returns the
// remaining positional arguments.
func Load(path string, environ []string, args []string) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	fields := keys(&c)
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for _, f := range fields {
		if v, ok := env[f.env()]; ok {
			if err := f.set(v); err != nil {
				return c, fmt.Errorf("%s: %w", f.env(), err)
			}
		}
	}
	fs := flag.NewFlagSet("csbs", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	for _, f := range fields {
		fs.Func(f.flag(), "config key "+f.path, f.set)
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.fill(env)
	return c, c.Validate()
}

// fill derives the defaults that depend on other keys or on the standard
// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
func (c *Config) fill(env map[string]string) {
	r := &c.Repository
	if r.URL == "" {
		if r.Path == "" {
			r.Path = filepath.Join(c.DataDir, "repository")
		}
		r.URL = "file://" + r.Path
	} else if loc, err := r.Location(); err == nil && loc.Scheme == "file" && r.Path == "" {
		r.Path = loc.Path
	}
	if r.S3.AccessKey == "" && r.S3.SecretKey == "" {
		r.S3.AccessKey, r.S3.SecretKey = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
	}
	if c.Repository.PasswordFile == "" {
		c.Repository.PasswordFile = filepath.Join(c.DataDir, "repository.key")
	}
	if c.Auth.TokenKeyFile == "" {
		c.Auth.TokenKeyFile = filepath.Join(c.DataDir, "token.key")
	}
}

// Validate reports the first key whose value cannot work.
func (c Config) Validate() error {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("listen %q: %w", c.Listen, err)
	}
	switch c.Auth.Mode {
	case "none":
		if !isLoopback(host) && !c.Auth.AllowInsecureListen {
			return fmt.Errorf("auth.mode none accepts every request; refusing to listen on %s (set auth.allow_insecure_listen to force it)", c.Listen)
		}
	case "builtin":
		if len(c.Auth.Users) == 0 {
			return errors.New("auth.mode builtin: auth.users lists nobody; add users (with csbs hash-password for their password_hash) in the config file")
		}
		if c.Auth.TokenTTL < time.Minute {
			return fmt.Errorf("auth.token_ttl %s: want at least 1m", c.Auth.TokenTTL)
		}
		if c.Auth.PublicURL != "" && !strings.HasPrefix(c.Auth.PublicURL, "http://") && !strings.HasPrefix(c.Auth.PublicURL, "https://") {
			return fmt.Errorf("auth.public_url %q: want an http:// or https:// URL", c.Auth.PublicURL)
		}
	case "keystone":
		if !strings.HasPrefix(c.Auth.KeystoneURL, "http://") && !strings.HasPrefix(c.Auth.KeystoneURL, "https://") {
			return fmt.Errorf("auth.keystone_url %q: keystone mode needs the http(s):// URL of the Keystone that issues the tokens", c.Auth.KeystoneURL)
		}
		if c.Auth.KeystoneUser == "" || c.Auth.KeystonePassword == "" {
			return errors.New("auth.mode keystone: set auth.keystone_user and auth.keystone_password, the service credentials csbs validates tokens with")
		}
		if c.Auth.KeystoneCacheTTL <= 0 {
			return fmt.Errorf("auth.keystone_cache_ttl %s: want a positive duration", c.Auth.KeystoneCacheTTL)
		}
	default:
		return fmt.Errorf("auth.mode %q: want none, builtin or keystone", c.Auth.Mode)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("tls_cert and tls_key: set both (HTTPS) or neither (HTTP)")
	}
	switch c.Compute.Driver {
	case "local":
	case "libvirt":
		if c.Compute.Libvirt.URI == "" {
			return errors.New("compute.libvirt.uri: empty; qemu:///system is libvirtd's system instance")
		}
		if c.Compute.Libvirt.ShutdownTimeout <= 0 {
			return fmt.Errorf("compute.libvirt.shutdown_timeout %s: want a positive duration", c.Compute.Libvirt.ShutdownTimeout)
		}
	default:
		return fmt.Errorf("compute.driver %q: want local or libvirt", c.Compute.Driver)
	}
	if c.Database != "" && !strings.HasPrefix(c.Database, "postgres://") && !strings.HasPrefix(c.Database, "postgresql://") && !strings.HasPrefix(c.Database, "sqlite:") {
		return fmt.Errorf("database %q: want empty (SQLite in data_dir), sqlite:PATH or a postgres:// URL", redactURL(c.Database))
	}
	if c.Jobs.Workers < 1 {
		return fmt.Errorf("jobs.workers %d: want at least 1", c.Jobs.Workers)
	}
	if c.Jobs.Lease < time.Second {
		return fmt.Errorf("jobs.lease %s: want at least 1s", c.Jobs.Lease)
	}
	if c.Jobs.MaxAttempts < 1 {
		return fmt.Errorf("jobs.max_attempts %d: want at least 1", c.Jobs.MaxAttempts)
	}
	if strings.ContainsAny(c.Node.Name, " \t\n/") || len(c.Node.Name) > 128 {
		return fmt.Errorf("node.name %q: want at most 128 characters without spaces or slashes (a host name)", c.Node.Name)
	}
	if c.Node.Heartbeat < 100*time.Millisecond || c.Node.Heartbeat > 10*time.Minute {
		return fmt.Errorf("node.heartbeat %s: want 100ms to 10m (a node is seen down after three missed beats)", c.Node.Heartbeat)
	}
	if c.Policies.Tick < 100*time.Millisecond || c.Policies.Tick > time.Minute {
		return fmt.Errorf("policies.tick %s: want 100ms to 1m (a fire time may run up to one tick late)", c.Policies.Tick)
	}
	if err := c.Repository.validate(); err != nil {
		return err
	}
	if err := c.Verify.validate(); err != nil {
		return err
	}
	if err := c.Quotas.validate(); err != nil {
		return err
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format %q: want text or json", c.Log.Format)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redactURL drops a password from a database URL so it can be shown.
func redactURL(s string) string {
	if i := strings.Index(s, "@"); i >= 0 {
		if j := strings.Index(s, "://"); j >= 0 && j < i {
			return s[:j+3] + "…" + s[i:]
		}
	}
	return s
}

// field is one settable key of Config.
type field struct {
	path string // yaml path, dotted
	v    reflect.Value
}

func (f field) env() string {
	return "CSBS_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(f.path))
}

func (f field) flag() string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(f.path)
}

func (f field) set(s string) error {
	switch f.v.Interface().(type) {
	case string:
		f.v.SetString(s)
	case bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s: want true or false, got %q", f.path, s)
		}
		f.v.SetBool(b)
	case int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%s: want a whole number, got %q", f.path, s)
		}
		f.v.SetInt(int64(n))
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%s: want a duration like 30s, got %q", f.path, s)
		}
		f.v.SetInt(int64(d))
	}
	return nil
}

// keys lists every leaf of c with its yaml path.
func keys(c *Config) []field {
	var out []field
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map {
				continue // lists and maps come from the YAML file only
			}
			if fv.Kind() == reflect.Struct {
				walk(fv, prefix+name+".")
				continue
			}
			out = append(out, field{path: prefix + name, v: fv})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}
