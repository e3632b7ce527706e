package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sigil-hsm/sigil/console"
	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/config"
	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/secret"
	"github.com/sigil-hsm/sigil/internal/tracing"
	"github.com/sigil-hsm/sigil/jwks"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	"github.com/sigil-hsm/sigil/keyring/etcdstore"
	"github.com/sigil-hsm/sigil/keyring/storehealth"
	_ "github.com/sigil-hsm/sigil/purpose/all" // the signing purposes Sigil serves
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/server"
)

func newServe() *cobra.Command {
	var (
		configPath, dataDir, logLevel string
		consoleAddr                   string
		addrs                         devmode.Addrs
		dev                           bool
	)
	cmd := &cobra.Command{
		Use:   "serve (--config FILE | --dev)",
		Short: "Run the signing server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg *config.Config
			var err error
			switch {
			case dev == (configPath != ""):
				return errors.New("serve needs exactly one of --config FILE and --dev")
			case dev:
				if cfg, err = devmode.Prepare(dataDir, addrs); err == nil && consoleAddr != "" {
					if host, _, _ := net.SplitHostPort(consoleAddr); host != "localhost" && !net.ParseIP(host).IsLoopback() {
						return fmt.Errorf("--console-addr %s: --dev listens on loopback only", consoleAddr)
					}
					cfg.Console = &config.Console{Addr: consoleAddr}
				}
			default:
				cfg, err = config.Load(configPath)
			}
			if err != nil {
				return err
			}
			var level slog.Level // info unless the flag or log.level says otherwise
			if err := level.UnmarshalText([]byte(cmp.Or(logLevel, cfg.Log.Level, "info"))); err != nil {
				return fmt.Errorf("log level: %w", err)
			}
			log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			captureLibraryLogs(log)
			access := func() (*authz.Authorizer, error) { return authz.Load(cfg.Policy) }
			if dev { // the dev client may do everything; nobody else anything
				access = func() (*authz.Authorizer, error) { return authz.Fixed(authz.AllowAll(mtls.DevClientIdentity)), nil }
			}
			return serve(cmd.Context(), cfg, access, log, func(bound devmode.Addrs) error {
				if dev { // before announcing, so a client that waits for the line finds it
					c, err := devmode.ClientFor(dataDir, bound)
					if err == nil {
						err = devmode.WriteClient(dataDir, c)
					}
					if err != nil {
						return err
					}
				}
				line := fmt.Sprintf("sigil listening: gRPC %s, HTTP %s, admin %s", bound.GRPC, bound.HTTP, bound.Admin)
				if bound.EthRPC != "" {
					line += ", ethrpc " + bound.EthRPC
				}
				if bound.Console != "" {
					line += ", console " + bound.Console
				}
				fmt.Fprintln(cmd.OutOrStdout(), line)
				if dev {
					fmt.Fprintf(cmd.OutOrStdout(), "connect with: sigil keys list --data-dir %s\n", dataDir)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "configuration file (docs/configuration.md)")
	f.BoolVar(&dev, "dev", false, "run the embedded development server: SoftHSM token and keyring in --data-dir, loopback only")
	f.StringVar(&dataDir, "data-dir", ".sigil-dev", "--dev: where the token, keyring and client settings live")
	f.StringVar(&addrs.GRPC, "grpc-addr", "127.0.0.1:7443", "--dev: gRPC listen address (loopback)")
	f.StringVar(&addrs.HTTP, "http-addr", "127.0.0.1:7080", "--dev: public HTTP listen address: JWK Sets, the audit key (loopback)")
	f.StringVar(&addrs.Admin, "admin-addr", "127.0.0.1:7081", "--dev: admin HTTP listen address: health, readiness, metrics (loopback)")
	f.StringVar(&addrs.EthRPC, "ethrpc-addr", "127.0.0.1:7545", "--dev: Ethereum JSON-RPC listen address, mTLS (loopback)")
	f.StringVar(&addrs.EthUpstream, "ethrpc-upstream", "", "--dev: an execution client's JSON-RPC URL behind the Ethereum endpoint (ethrpc.upstream.url)")
	f.StringVar(&consoleAddr, "console-addr", "127.0.0.1:7444", "--dev: the console's HTTPS listen address (loopback; served as https://localhost:PORT); empty: no console")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (default: log.level of the configuration, else info)")
	return cmd
}

// schedulerInterval is how often due rotation steps are looked for. A
// tick that finds nothing due reads memory only, so it is cheap; a short
// interval keeps accelerated schedules (drills) on time.
const schedulerInterval = 250 * time.Millisecond

// serve opens what cfg names, listens, calls ready with the bound
// addresses, and serves until ctx ends.
func serve(ctx context.Context, cfg *config.Config, access func() (*authz.Authorizer, error), log *slog.Logger, ready func(devmode.Addrs) error) error {
	az, err := access()
	if err != nil {
		return err
	}
	tlsConfig, err := mtls.ServerConfig(cfg.GRPC.TLS.Files(), func(msg string, err error) { log.Error(msg, "err", err) })
	if err != nil {
		return err
	}
	go reloadOnHangup(ctx, az, log)
	stopTracing, err := tracing.Setup(ctx, tracing.Config{Enabled: cfg.Tracing.Enabled, SampleRatio: cfg.Tracing.Ratio()}, server.Version().Version)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() { // the last spans go out before the process ends
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		stopTracing(sctx)
	}()
	backends, closeBackends, err := openBackends(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeBackends()
	raw, schedule, err := openStore(ctx, cfg.Store, log)
	if err != nil {
		return err
	}
	store := storehealth.Guard(raw, storehealth.Options{Timeout: cfg.Store.Timeout, HealthInterval: cfg.Store.HealthInterval})
	store.Start()
	defer store.Close()
	repairs := &repairAuditor{log: log}
	kr, err := keyring.New(ctx, keyring.Options{Store: store, Backends: backends, DefaultBackend: cfg.DefaultBackend, Logger: log,
		SoleWriter: cfg.Store.Type != "etcd", Retention: cfg.Keyring.Retention, CreatingGrace: cfg.Keyring.CreatingGrace,
		SweepInterval: cfg.Keyring.SweepInterval, OrphanGrace: cfg.Keyring.OrphanGrace, OnRepair: repairs.record})
	if err != nil {
		return err
	}
	auditLog, err := openAudit(ctx, cfg.Audit, kr, store, log)
	if err != nil {
		return err
	}
	defer auditLog.Close()
	repairs.start(auditLog)
	pub := jwks.NewPublisher()
	if err := jwks.Follow(ctx, kr, jwt.Sets{Anchors: store}, pub, log); err != nil {
		return err
	}
	node, err := upstream(cfg.EthRPC.Upstream)
	if err != nil {
		return err
	}
	opts := server.Options{Keyring: kr, Backends: backends, Logger: log, JWKS: pub, Ledger: store, TLS: tlsConfig, Authz: az, Audit: auditLog, Anchors: store, Store: store,
		ApprovalLease: cfg.Approvals.RunLease, ApprovalSweep: cfg.Approvals.SweepInterval, Settings: map[string]any{eth.Name: &eth.Settings{Upstream: node}}}
	lis, addrs, err := listen(cfg)
	if err != nil {
		return err
	}
	if err := ready(addrs); err != nil {
		lis.close()
		return err
	}
	log.Info("serving", "grpc", addrs.GRPC, "http", addrs.HTTP, "admin", addrs.Admin, "keys", len(kr.List(ctx)))
	// The scheduler stops before the store and backends close under it.
	schedCtx, stopScheduler := context.WithCancel(ctx)
	schedDone := make(chan struct{})
	go func() { defer close(schedDone); schedule(schedCtx, kr) }()
	defer func() { stopScheduler(); <-schedDone }()
	if cfg.Console != nil {
		opts.ConsoleOrigin, opts.ConsoleRPID = cfg.Console.Origin, cfg.Console.RPID
		if opts.ConsoleRPID == "" {
			if u, err := url.Parse(cfg.Console.Origin); err == nil {
				opts.ConsoleRPID = u.Hostname()
			}
		}
	}
	notifier, err := newNotifier(cfg, store, log)
	if err != nil {
		lis.close()
		return err
	}
	if notifier != nil {
		opts.Events, opts.Collectors = notifier.Raise, append(opts.Collectors, notifier)
		// Delivery stops before the store closes under it.
		notifyCtx, stopNotify := context.WithCancel(ctx)
		notifyDone := make(chan struct{})
		go func() { defer close(notifyDone); notifier.Run(notifyCtx) }()
		defer func() { stopNotify(); <-notifyDone }()
	}
	srv := server.New(opts)
	if lis.Console != nil {
		stopConsole, err := serveConsole(ctx, cfg.Console, lis.Console, srv, tlsConfig, store, log)
		if err != nil {
			lis.close()
			return err
		}
		defer stopConsole()
	}
	err = srv.Serve(ctx, server.Listeners(lis.Listeners))
	log.Info("stopped")
	return err
}

// listeners are the server's listeners, as serve opens them, and the
// console's.
type listeners struct {
	server.Listeners
	Console net.Listener
}

func (l listeners) close() {
	for _, c := range append([]net.Listener{l.GRPC, l.Public, l.Admin, l.Console}, l.Purposes["eth"]) {
		if c != nil {
			c.Close()
		}
	}
}

// listen opens the gRPC, public HTTP and admin HTTP listeners cfg names
// and returns their bound addresses.
func listen(cfg *config.Config) (listeners, devmode.Addrs, error) {
	var l listeners
	var err error
	for _, x := range []struct {
		lis  *net.Listener
		addr string
	}{{&l.GRPC, cfg.GRPC.Addr}, {&l.Public, cfg.HTTP.PublicAddr}, {&l.Admin, cfg.HTTP.AdminAddr}} {
		if *x.lis, err = net.Listen("tcp", x.addr); err != nil {
			l.close()
			return listeners{}, devmode.Addrs{}, err
		}
	}
	bound := devmode.Addrs{GRPC: l.GRPC.Addr().String(), HTTP: l.Public.Addr().String(), Admin: l.Admin.Addr().String()}
	if cfg.EthRPC.Addr != "" {
		eth, err := net.Listen("tcp", cfg.EthRPC.Addr)
		if err != nil {
			l.close()
			return listeners{}, devmode.Addrs{}, err
		}
		l.Purposes, bound.EthRPC = map[string]net.Listener{"eth": eth}, eth.Addr().String()
	}
	if cfg.Console != nil {
		if l.Console, err = net.Listen("tcp", cfg.Console.Addr); err != nil {
			l.close()
			return listeners{}, devmode.Addrs{}, err
		}
		if cfg.Console.Origin == "" { // --dev: a browser takes localhost as a WebAuthn origin, not an IP
			_, port, _ := net.SplitHostPort(l.Console.Addr().String())
			cfg.Console.Origin = "https://localhost:" + port
		}
		bound.Console = cfg.Console.Origin
	}
	return l, bound, nil
}

// serveConsole serves the console on l with the server's certificate and
// no client certificate asked (people sign in with passkeys), until ctx
// ends or the returned stop.
func serveConsole(ctx context.Context, c *config.Console, l net.Listener, srv *server.Server, base *tls.Config, store keyring.Anchors, log *slog.Logger) (func(), error) {
	con, err := console.New(console.Options{Access: srv, Store: console.Store{A: store}, Origin: c.Origin, RPID: c.RPID, Log: log})
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: tracing.HTTP("sigil.console.http", con.Handler()), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			cfg, err := base.GetConfigForClient(h)
			if err != nil || cfg == nil || len(cfg.Certificates) == 0 {
				return nil, fmt.Errorf("no server certificate")
			}
			return &cfg.Certificates[0], nil
		}}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("console stopped", "err", err)
		}
	}()
	stopped := context.AfterFunc(ctx, func() { hs.Close() })
	return func() { stopped(); hs.Close(); <-done }, nil
}

// upstream is the execution client ethrpc.upstream configures, with its
// secrets read now (none if c is nil).
func upstream(c *config.Upstream) (*eth.Upstream, error) {
	if c == nil {
		return nil, nil
	}
	u := &eth.Upstream{URL: c.URL, Header: http.Header{}, Timeout: c.Timeout}
	if secret.IsRef(c.URL) {
		v, err := secret.Ref(c.URL).Resolve("ethrpc.upstream.url")
		if err != nil {
			return nil, err
		}
		u.URL = strings.TrimSpace(string(v))
		if err := config.CheckUpstreamURL(u.URL); err != nil {
			return nil, err
		}
	}
	for name, v := range c.Headers {
		if secret.IsRef(v) {
			b, err := secret.Ref(v).Resolve("ethrpc.upstream.headers." + name)
			if err != nil {
				return nil, err
			}
			v = string(b)
		}
		u.Header.Set(name, v)
	}
	if c.TLS != nil {
		tc, err := mtls.ClientConfig(c.TLS.Cert, c.TLS.Key, c.TLS.CA)
		if err != nil {
			return nil, fmt.Errorf("ethrpc.upstream.tls: %w", err)
		}
		t := http.DefaultTransport.(*http.Transport).Clone() // its proxy from the environment, its timeouts
		t.TLSClientConfig, t.MaxIdleConnsPerHost = tc, 16
		u.Client = &http.Client{Transport: t}
	}
	return u, nil
}

// openAudit opens the audit log, its checkpoints signed with the audit
// key (made on first start) and anchored in the keyring store.
func openAudit(ctx context.Context, c *config.Audit, kr *keyring.Keyring, store keyring.Anchors, log *slog.Logger) (*audit.Log, error) {
	if _, err := kr.EnsureAuditKey(ctx); err != nil {
		return nil, fmt.Errorf("the audit key: %w", err)
	}
	return audit.Open(ctx, audit.Options{Path: c.Path, MaxSize: c.MaxSize, Replica: c.Replica, Signer: keyring.AuditSigner{Keyring: kr}, Anchors: store,
		CheckpointEvery: c.Checkpoint.Every, CheckpointInterval: c.Checkpoint.Interval, Logger: log})
}

// repairAuditor records each repair the keyring makes by itself in the
// audit log, as Sigil's own action; repairs made while the keyring loads,
// before the log is open, are written once it is.
type repairAuditor struct {
	log    *slog.Logger
	mu     sync.Mutex
	audit  *audit.Log
	queued []keyring.Repair
}

func (a *repairAuditor) record(rep keyring.Repair) {
	a.mu.Lock()
	l := a.audit
	if l == nil {
		a.queued = append(a.queued, rep)
	}
	a.mu.Unlock()
	if l == nil {
		return
	}
	op := "keyring.repair"
	if !rep.Kind.IsRepair() {
		op = "keyring.lifecycle" // a step the scheduler took: a deletion, an expired generation destroyed
	}
	rec := &audit.Record{Time: time.Now().UTC(), Identity: "sigil", Operation: op, KeyID: rep.KeyID,
		Generation: rep.Generation, Outcome: string(rep.Kind), Code: "OK"}
	if err := l.Write(rec); err != nil {
		a.log.Error("audit record of a keyring repair failed", "repair", string(rep.Kind), "key", rep.KeyID, "err", err)
	}
}

// start writes the queued repairs to l, and every later one.
func (a *repairAuditor) start(l *audit.Log) {
	a.mu.Lock()
	a.audit = l
	queued := a.queued
	a.queued = nil
	a.mu.Unlock()
	for _, rep := range queued {
		a.record(rep)
	}
}

// ledgerStore is a keyring store that also counts spending and keeps
// the audit anchors.
type ledgerStore interface {
	keyring.Store
	keyring.Ledger
	keyring.Anchors
	keyring.Snapshotter
	Close() error
}

// openStore is openRawStore, refusing a store a restore was cut short in
// (etcd's restore is written in batches after a marker its last batch
// removes): it holds part of a backup.
func openStore(ctx context.Context, c config.Store, log *slog.Logger) (ledgerStore, func(context.Context, *keyring.Keyring), error) {
	s, schedule, err := openRawStore(ctx, c, log)
	if err != nil {
		return nil, nil, err
	}
	if r, ok := s.(interface{ CheckRestored(context.Context) error }); ok {
		if err := r.CheckRestored(ctx); err != nil {
			s.Close()
			return nil, nil, err
		}
	}
	return s, schedule, nil
}

// openRawStore opens the configured keyring store and says how to run the
// rotation scheduler over it: directly for bbolt (one node), or for etcd
// on the one replica that wins the election, every replica following the
// store's changes.
func openRawStore(ctx context.Context, c config.Store, log *slog.Logger) (ledgerStore, func(context.Context, *keyring.Keyring), error) {
	if c.Type != "etcd" {
		s, err := boltstore.Open(c.Path)
		return s, func(ctx context.Context, kr *keyring.Keyring) { kr.Run(ctx, schedulerInterval) }, err
	}
	ec := etcdstore.Config{Endpoints: c.Endpoints, Prefix: c.Prefix}
	if c.TLS != nil {
		t, err := mtls.ClientConfig(c.TLS.Cert, c.TLS.Key, c.TLS.CA)
		if err != nil {
			return nil, nil, fmt.Errorf("store.tls: %w", err)
		}
		ec.TLS = t
	}
	s, err := etcdstore.Open(ctx, ec)
	return s, func(ctx context.Context, kr *keyring.Keyring) {
		go kr.Follow(ctx, s)
		s.RunScheduler(ctx, kr, schedulerInterval, etcdstore.ReplicaName(), log)
	}, err
}

// reloadOnHangup re-reads the policy file on SIGHUP; a bad file is refused
// and the policy in force stays.
func reloadOnHangup(ctx context.Context, az *authz.Authorizer, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := az.Reload(); err != nil {
				log.Error("policy reload refused; the previous policy stays", "err", err)
			} else {
				log.Info("policy reloaded")
			}
		}
	}
}
