package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/csbs/csbs/internal/auth"
	"github.com/csbs/csbs/internal/console"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/csbs/csbs/internal/api"
	"github.com/csbs/csbs/internal/cluster"
	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/compute/libvirt"
	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/config"
	"github.com/csbs/csbs/internal/jobs"
	"github.com/csbs/csbs/internal/logging"
	"github.com/csbs/csbs/internal/metrics"
	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/service"
	"github.com/csbs/csbs/internal/store"
)

func serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve [--config FILE] [--KEY VALUE ...]",
		Short: "Serve the CSBS API and run backup jobs",
		Long: `Serve the CSBS v1 API and run the backup workers until SIGTERM or SIGINT.

Every configuration key can be given in the YAML file, as a CSBS_… environment
variable, or as a flag: compute.inventory is CSBS_COMPUTE_INVENTORY and
--compute-inventory. Flags win over the environment, which wins over the file.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, rest, help := configArg(args)
			if help {
				return cmd.Help()
			}
			cfg, err := config.Load(path, os.Environ(), rest)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return serve(ctx, cfg, nil)
		},
	}
}

// configArg takes --config FILE (or --config=FILE) out of args.
func configArg(args []string) (path string, rest []string, help bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-h" || a == "--help":
			help = true
		case a == "--config" || a == "-config":
			if i+1 < len(args) {
				path = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "--config="):
			path = strings.TrimPrefix(a, "--config=")
		default:
			rest = append(rest, a)
		}
	}
	return path, rest, help
}

func newLogger(c config.Log) *slog.Logger {
	return logging.New(os.Stderr, c.Format, c.Level)
}

// serve runs the service until ctx is cancelled. ready, when not nil, is
// called with the address once the API listens.
func serve(ctx context.Context, cfg config.Config, ready func(addr string)) error {
	log := newLogger(cfg.Log)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if cfg.Auth.Mode == "none" {
		log.Warn("auth.mode is none: every request is accepted and the project comes from the URL; for local development only")
	}

	db, err := store.Open(ctx, cfg.Database, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()

	repo, err := openRepository(ctx, cfg.Repository, log)
	if err != nil {
		return err
	}
	defer repo.Close()

	localDrv, err := computeDriver(cfg.Compute, cfg.DataDir, log)
	if err != nil {
		return err
	}
	drv := localDrv
	node, placed := cfg.Placement()
	var member *cluster.Member
	if placed {
		// The node's servers are published before its API answers, so that
		// every node finds them from the first request on.
		member = cluster.New(db, localDrv, cluster.Config{Node: node, Heartbeat: cfg.Node.Heartbeat, Log: log})
		if err := member.Beat(ctx); err != nil {
			return fmt.Errorf("node %s: publish its servers: %w", node, err)
		}
		drv = member.Driver()
	}

	var svc *service.Service // made below; the metrics read it only when scraped
	mc := metrics.Config{Queue: db, RepoSize: repo.Size, Log: log, Damaged: db.CountDamaged,
		LastVerify: func() (time.Time, int64, time.Duration) {
			r := svc.LastVerify()
			return r.At, r.Bytes, r.Duration
		}}
	if ld, ok := localDrv.(*local.Driver); ok {
		mc.KeptClones = func() (metrics.KeptClones, error) {
			ctx := context.Background()
			ks, err := ld.KeptClones(ctx)
			var m metrics.KeptClones
			for _, k := range ks {
				err = errors.Join(err, ld.MeasureKept(ctx, &k))
				m.Count++
				m.ApparentBytes += k.ApparentBytes
				m.ExclusiveBytes += k.ExclusiveBytes
			}
			return m, err
		}
	}
	met := metrics.New(mc)
	owner := node
	if owner == "" {
		owner, _ = os.Hostname()
	}
	runner := jobs.New(db, jobs.Config{
		Owner: fmt.Sprintf("%s/%d/%s", owner, os.Getpid(), randomHex(4)), Node: node, Workers: cfg.Jobs.Workers,
		Lease: cfg.Jobs.Lease, MaxAttempts: cfg.Jobs.MaxAttempts, Log: log, Observer: met,
	})
	svc = service.New(service.Config{Store: db, Compute: drv, Repo: repo, Notify: runner.Notify, Log: log,
		Quotas: serviceQuotas(cfg.Quotas), Meter: met, SharedDedup: cfg.Repository.Dedup == "shared", Node: node})
	runner.Handle(service.JobProtect, svc.ProtectJob())
	runner.Handle(service.JobDelete, svc.DeleteJob())
	runner.Handle(service.JobRestore, svc.RestoreJob())

	validator, tokenKey, err := identity(cfg.Auth, db, log)
	if err != nil {
		return err
	}
	opts := []api.Option{api.WithMetrics(met, met.Handler()), api.WithPublicURL(cfg.Auth.PublicURL)}
	if validator != nil {
		opts = append(opts, api.WithAuth(validator, cfg.Auth.Region))
	}
	con, err := newConsole(svc, validator, tokenKey, log)
	if err != nil {
		return err
	}
	opts = append(opts, api.WithConsole(con))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ln, scheme, err := listenTLS(ln, cfg, log)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: api.New(svc, log, opts...), ReadHeaderTimeout: 10 * time.Second}

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); runner.Run(workCtx) }()
	go func() { defer wg.Done(); svc.RunGC(workCtx) }()
	wg.Add(1)
	go func() { defer wg.Done(); svc.RunScheduler(workCtx, cfg.Policies.Tick) }()
	if member != nil {
		wg.Add(1)
		go func() { defer wg.Done(); member.Run(workCtx) }()
	}
	if verifySched, err := cfg.Verify.ParseSchedule(); err != nil {
		log.Error("verify.schedule not understood; no scheduled verification", "err", err) // Load validated it
	} else if !verifySched.Off() {
		wg.Add(1)
		go func() { defer wg.Done(); svc.RunVerifier(workCtx, verifySched.Next, cfg.Verify.MaxAge) }()
	}
	if ld, ok := localDrv.(*local.Driver); ok {
		wg.Add(1)
		go func() { defer wg.Done(); cleanSnapshots(workCtx, ld, svc, log) }()
	}
	svc.KickGC() // collect what a crash may have left

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("csbs serving", "listen", ln.Addr().String(), "scheme", scheme, "data_dir", cfg.DataDir, "database", dbKind(cfg.Database),
		"node", node, "repository", cfg.Repository.URL)
	if ready != nil {
		ready(ln.Addr().String())
	}

	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down: finishing requests; running jobs resume at next start")
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
	}
	stopWork()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func dbKind(url string) string {
	if url == "" || strings.HasPrefix(url, "sqlite:") {
		return "sqlite"
	}
	return "postgres"
}

// passwordEnv holds the repository password itself, for installations that
// keep it in a secret store rather than a file (environment only: a flag
// would show in ps, and the YAML file is what it would be kept out of).
const passwordEnv = "CSBS_REPOSITORY_PASSWORD"

// openRepository opens the repository, creating it and its password file on
// first start. The password never leaves the file (or $CSBS_REPOSITORY_PASSWORD).
func openRepository(ctx context.Context, c config.Repository, log *slog.Logger) (*repository.Repository, error) {
	if pw := strings.TrimSpace(os.Getenv(passwordEnv)); pw != "" {
		repo, created, err := openRepo(ctx, c, []byte(pw), true)
		if err == nil && created {
			log.Info("created repository with the password of "+passwordEnv+"; keep a copy: without it no backup can be read", "url", c.URL)
		}
		if errors.Is(err, repository.ErrWrongPassword) {
			return nil, fmt.Errorf("repository %s: the password in $%s does not open it", c.URL, passwordEnv)
		}
		return repo, err
	}
	pw, err := os.ReadFile(c.PasswordFile)
	if errors.Is(err, os.ErrNotExist) {
		exists, err := repoExists(ctx, c)
		if err != nil {
			return nil, err
		}
		if exists {
			return nil, fmt.Errorf("repository %s exists but its password file %s is missing; restore the password file", c.URL, c.PasswordFile)
		}
		pw = []byte(randomHex(32))
		if err := os.MkdirAll(filepath.Dir(c.PasswordFile), 0o700); err != nil {
			return nil, err
		}
		if err := writeNewFile(c.PasswordFile, pw); err != nil {
			return nil, fmt.Errorf("write repository password file: %w", err)
		}
		log.Info("generated a repository password file; keep a copy: without it no backup can be read", "password_file", c.PasswordFile)
	} else if err != nil {
		return nil, fmt.Errorf("read repository password file: %w", err)
	}
	pw = []byte(strings.TrimSpace(string(pw)))
	repo, created, err := openRepo(ctx, c, pw, true)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created repository", "url", c.URL)
	}
	return repo, nil
}

// newConsole is the web console over svc, signing in with the builtin
// identity or at Keystone (whichever validates the API's tokens).
// Its CSRF key derives from the token key, which every process of an
// installation shares; without one (auth.mode none) it is random.
func newConsole(svc *service.Service, v auth.Validator, tokenKey []byte, log *slog.Logger) (*console.Console, error) {
	key := make([]byte, 32)
	if len(tokenKey) > 0 {
		m := hmac.New(sha256.New, tokenKey)
		m.Write([]byte("csbs console csrf key"))
		key = m.Sum(nil)
	} else {
		rand.Read(key)
	}
	var iss console.Issuer
	switch v := v.(type) {
	case *auth.Keystone:
		iss = keystoneSignIn{v}
	case console.Issuer:
		iss = v
	}
	return console.New(console.Config{Service: svc, Validator: v, Issuer: iss, CSRFKey: key, Log: log})
}

// keystoneSignIn signs console users in at Keystone (and revokes their
// tokens there on sign-out).
type keystoneSignIn struct{ *auth.Keystone }

func (k keystoneSignIn) Issue(ctx context.Context, c auth.Credentials) (string, *auth.Principal, error) {
	return k.SignIn(ctx, c)
}

// writeNewFile creates path (mode 0600) holding data durably before the
// repository it opens is created: a temporary file is synced, linked to
// path (which fails if path exists: two processes starting at once keep
// one password) and the directory synced. A crash leaves either no file or
// the whole one.
func writeNewFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// keptClonesDir is the directory of data_dir where the local driver writes
// down the directories it keeps clones in (local.WithStateDir).
const keptClonesDir = "kept-clones"

// snapshotCleanEvery is how often the local driver's leftover snapshots and
// useless kept clones are looked for.
const snapshotCleanEvery = 10 * time.Minute

// cleanSnapshots removes what crashed backups left next to the disks, the
// kept clones of disks gone from the inventory and those of backups gone
// (deleted through any node: service.SweepKeptClones), at start and every
// snapshotCleanEvery until ctx ends.
func cleanSnapshots(ctx context.Context, d *local.Driver, svc *service.Service, log *slog.Logger) {
	t := time.NewTicker(snapshotCleanEvery)
	defer t.Stop()
	for {
		n, err := d.RemoveStaleSnapshots(ctx)
		swept, serr := svc.SweepKeptClones(ctx)
		n += swept
		if err = errors.Join(err, serr); err != nil && ctx.Err() == nil {
			log.Warn("compute/local: clean up snapshots and kept clones", "removed", n, "err", err)
		} else if n > 0 {
			log.Info("compute/local: removed leftover snapshots and kept clones", "removed", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// computeDriver opens the driver of this node's servers.
// The local driver writes down where it keeps clones in dataDir.
func computeDriver(c config.Compute, dataDir string, log *slog.Logger) (compute.Driver, error) {
	if c.Driver == "libvirt" {
		d, err := libvirt.New(libvirt.Config{URI: c.Libvirt.URI, DefaultProject: c.Libvirt.DefaultProject,
			ScratchDir: c.Libvirt.ScratchDir, ShutdownTimeout: c.Libvirt.ShutdownTimeout, Log: log})
		if err != nil {
			return nil, fmt.Errorf("compute.driver libvirt: %w", err)
		}
		return d, nil
	}
	d, err := local.New(c.Inventory, local.WithLogger(log), local.WithKeepClones(c.Local.KeepClones),
		local.WithStateDir(filepath.Join(dataDir, keptClonesDir)))
	if err != nil {
		return nil, fmt.Errorf("compute inventory: %w", err)
	}
	return d, nil
}
