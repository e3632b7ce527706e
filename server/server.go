package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/internal/tracing"
	"github.com/sigil-hsm/sigil/jwks"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/signer"
)

// Limits on what a client can make the server hold or wait for.
const (
	// MaxRequestBytes bounds a gRPC request message; larger ones are
	// refused by gRPC with ResourceExhausted before they are decoded.
	MaxRequestBytes = 256 << 10
	// MaxHeaderBytes bounds a call's metadata, MaxStreams the calls open
	// at once on one connection.
	MaxHeaderBytes = 16 << 10
	MaxStreams     = 128
	// DefaultDeadline applies to requests that arrive without a deadline.
	DefaultDeadline = 30 * time.Second
	// NamespaceRefresh is how often a replica re-reads the namespaces:
	// another replica's freeze stops this one's signatures within it.
	NamespaceRefresh = time.Second
	// shutdownGrace is how long in-flight requests get to finish.
	shutdownGrace = 10 * time.Second
)

// Options configure a Server.
type Options struct {
	Keyring  *keyring.Keyring
	Backends map[string]signer.Backend
	Logger   *slog.Logger
	// JWKS serves the JWK Sets on the HTTP listener; none if nil.
	JWKS *jwks.Publisher
	// Now is the clock JWTs are stamped with; time.Now if nil.
	Now func() time.Time
	// Ledger counts Ethereum spending for daily limits; keys with a daily
	// limit cannot sign transactions without one.
	Ledger keyring.Ledger
	// Authz decides who may do what. Nil authorizes every request: only
	// for tests and benchmarks that embed the server; the sigil command
	// always sets it.
	Authz *authz.Authorizer
	// Audit receives a record of every decision; none if nil.
	Audit *audit.Log
	// Anchors holds the audit checkpoints (the keyring store).
	Anchors keyring.Anchors
	// Namespaces are the namespaces (kept in Anchors); one over Anchors
	// is made if nil. Its freezes stop the Keyring's signatures.
	Namespaces *namespace.Registry
	// Store reports the keyring store's health for readiness, as each
	// backend's monitor does; not checked if nil.
	Store signer.HealthReporter
	// ApprovalLease is how long a replica's claim to run an approved
	// request lasts (2×DefaultDeadline if zero); the run gets half.
	// ApprovalSweep is how often the replica looks for approved requests
	// nobody runs (10s if zero).
	ApprovalLease, ApprovalSweep time.Duration
	// Settings are the purposes' own settings, by purpose name (see
	// purpose.Deps.Settings).
	Settings map[string]any
	// TLS, when set, secures the gRPC listener (with client certificates
	// if it asks for them). Nil serves plaintext, for loopback dev only.
	TLS *tls.Config
	// ConsoleOrigin is the console's origin, when one is served: an
	// enrollment's link starts with it, and a decision's passkey
	// assertion must be made on it; ConsoleRPID is its WebAuthn RP ID.
	ConsoleOrigin, ConsoleRPID string
	// Events, when set, is told each change of a dependency's health
	// (backend.down/up, store.down/up; subject, detail) and each tamper
	// record the audit log writes (audit.tamper): the webhooks' events
	// that belong to no request.
	Events func(typ, subject, detail string)
	// Collectors are served with the server's own metrics.
	Collectors []prometheus.Collector
}

// Server is a configured Sigil server.
type Server struct {
	opts    Options
	log     *slog.Logger
	grpc    *grpc.Server
	health  *health.Server
	metrics *metrics
	// purposes serve the signing services; routes say how each method
	// is admitted.
	purposes []purpose.Purpose
	routes   routes
	// interceptors admit, audit and time every call, gRPC's and Invoke's;
	// methods are the registered RPCs, for Invoke.
	interceptors []grpc.UnaryServerInterceptor
	methods      map[string]method
	// deps are what the purposes' services are built on; keySvc is the
	// KeyService.
	deps   purpose.Deps
	keySvc *keyService
	// approvals keeps the requests held for approval (nil when the store
	// keeps no anchors); runner names this replica when it runs one.
	approvals *approval.Store
	runner    string
	// namespaces are the namespaces calls are made in.
	namespaces *namespace.Registry
	// batchSlots bound the items of all batches running at once.
	batchSlots chan struct{}
}

// New builds the gRPC server and its services.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ApprovalLease == 0 {
		o.ApprovalLease = 2 * DefaultDeadline
	}
	if o.ApprovalSweep == 0 {
		o.ApprovalSweep = 10 * time.Second
	}
	s := &Server{opts: o, log: o.Logger, health: health.NewServer(), metrics: newMetrics(o.Backends), purposes: purpose.All(), methods: map[string]method{}}
	s.routes = routing(s.purposes)
	s.namespaces = o.Namespaces
	if s.namespaces == nil {
		var store namespace.Store
		if o.Anchors != nil {
			store = o.Anchors
		}
		s.namespaces = namespace.NewRegistry(store)
	}
	if o.Keyring != nil {
		o.Keyring.SetGate(s.namespaces.Frozen)
	}
	if o.Store != nil {
		s.metrics.registerStore(o.Store)
	}
	if o.Keyring != nil {
		s.metrics.registerRepairs(o.Keyring)
		s.metrics.registerKeys(o.Keyring)
	}
	if o.JWKS != nil {
		o.JWKS.OnServe = s.metrics.observeJWKS
	}
	if o.Audit != nil {
		s.metrics.registerAudit(o.Audit)
	}
	s.metrics.reg.MustRegister(o.Collectors...)
	s.batchSlots = make(chan struct{}, batchWorkers)
	s.interceptors = []grpc.UnaryServerInterceptor{traced, s.metrics.interceptor, errorInterceptor(s.log), s.access, defaultDeadline}
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = expiringCreds{credentials.NewTLS(o.TLS)}
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(MaxRequestBytes),
		// Bounds on what a client can make the server hold before any
		// request is read: metadata per call and calls per connection.
		grpc.MaxHeaderListSize(MaxHeaderBytes),
		grpc.MaxConcurrentStreams(MaxStreams),
		// A method no service has (or a misspelt one) is refused and
		// audited like any other door not named.
		grpc.UnknownServiceHandler(s.unknownMethod),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: MaxConnectionAge, MaxConnectionAgeGrace: MaxConnectionAgeGrace}),
		// Reuse handler goroutines: a fresh one must grow its stack for
		// the cgo call into the HSM on every request.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.ChainUnaryInterceptor(s.interceptors...),
		grpc.ChainStreamInterceptor(s.streamAccess),
		grpc.ForceServerCodecV2(newRawCodec()),
	)
	if o.Anchors != nil {
		s.approvals, s.runner = approval.NewStore(o.Anchors), approval.NewID()[:12]
	}
	s.deps = purpose.Deps{Keys: o.Keyring, Ledger: o.Ledger, Anchors: o.Anchors, Now: o.Now, Log: s.log, OnGeneration: noteGeneration, OnDetail: noteDetail, OnSign: s.metrics.observeSign, Each: s.each, CanRead: s.allowedKey, Covering: s.covering, Settings: o.Settings}
	s.keySvc = &keyService{keys: o.Keyring, purposes: s.purposes, visible: s.allowedKey, deps: s.deps}
	s.register(&sigilv1.KeyService_ServiceDesc, s.keySvc)
	s.register(&sigilv1.AuditService_ServiceDesc, &auditService{keys: o.Keyring, anchors: o.Anchors, log: o.Audit, visible: s.allowedKey})
	s.register(&sigilv1.BackupService_ServiceDesc, &backupService{s: s})
	s.register(&sigilv1.ConsoleService_ServiceDesc, &consoleService{s: s})
	s.register(&sigilv1.ApprovalService_ServiceDesc, &approvalService{s: s})
	s.register(&sigilv1.NamespaceService_ServiceDesc, &namespaceService{s: s})
	s.register(&sigilv1.StatusService_ServiceDesc, &statusService{s: s})
	for _, p := range s.purposes {
		s.register(p.Service(s.deps))
		if pm, ok := p.(purpose.Metrics); ok {
			s.metrics.reg.MustRegister(pm.Collectors(s.deps)...)
		}
	}
	s.metrics.preset(slices.Collect(maps.Keys(s.methods)))
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s
}

func defaultDeadline(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultDeadline)
		defer cancel()
	}
	return h(ctx, req)
}

// PublicHandler serves what relying parties and auditors fetch: the JWK
// Sets and the audit public key. It is meant to face the internet.
func (s *Server) PublicHandler() http.Handler {
	mux := http.NewServeMux()
	if s.opts.JWKS != nil {
		s.opts.JWKS.Register(mux)
	}
	mux.HandleFunc("GET /audit/key", s.serveAuditKey)
	return mux
}

// AdminHandler serves /healthz, /readyz and /metrics (whose labels name
// keys): for the operator's network only.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})) // OpenMetrics carries the exemplars
	return mux
}

// backendState is one backend's health as /readyz reports it.
type backendState struct {
	Up          bool      `json:"up"`
	Detail      string    `json:"detail,omitempty"`
	LastHealthy time.Time `json:"last_healthy,omitzero"`
}

// readiness is what /readyz and the gRPC health service report: each
// backend's state, the store's and the audit log's.
type readiness struct {
	Ready    bool                    `json:"ready"`
	Backends map[string]backendState `json:"backends"`
	Store    *backendState           `json:"store,omitempty"`
	Audit    backendState            `json:"audit"`
}

// readiness reports whether every backend, the keyring store and the
// audit log are up, with each one's state. It asks their health monitors,
// never the backends or the store themselves, so a probe of a hung HSM or
// an etcd without quorum cannot hang the probe of Sigil.
func (s *Server) readiness() readiness {
	auditUp, auditDetail := s.auditState()
	r := readiness{Ready: auditUp, Backends: map[string]backendState{}, Audit: backendState{Up: auditUp, Detail: auditDetail}}
	for name, b := range s.opts.Backends {
		if hr, ok := b.(signer.HealthReporter); ok {
			h := hr.Health()
			r.Backends[name] = backendState{Up: h.Up, Detail: h.Detail, LastHealthy: h.LastHealthy}
			r.Ready = r.Ready && h.Up
		}
	}
	if s.opts.Store != nil {
		h := s.opts.Store.Health()
		r.Store = &backendState{Up: h.Up, Detail: h.Detail, LastHealthy: h.LastHealthy}
		r.Ready = r.Ready && h.Up
	}
	return r
}

// ready answers 200 when every dependency is up and 503 otherwise, with
// each one's state in a JSON body.
func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	r := s.readiness()
	w.Header().Set("Content-Type", "application/json")
	if !r.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(r)
}

// healthWatch is how often the gRPC health service is brought in line with
// the backends' health.
const healthWatch = 250 * time.Millisecond

// watchHealth keeps the gRPC health service's answers, overall ("") and
// per service, in line with readiness until ctx ends.
func (s *Server) watchHealth(ctx context.Context) {
	names := []string{""}
	for name := range s.grpc.GetServiceInfo() {
		if strings.HasPrefix(name, "sigil.") {
			names = append(names, name)
		}
	}
	t := time.NewTicker(healthWatch)
	defer t.Stop()
	last := healthpb.HealthCheckResponse_UNKNOWN
	var seen readiness
	tampers := s.tampers()
	for {
		if n := s.tampers(); n > tampers {
			s.event("audit.tamper", "audit log", fmt.Sprintf("%d tamper record(s) written: the log did not reach, or disagreed with, its anchored checkpoint", n-tampers))
			tampers = n
		}
		st := healthpb.HealthCheckResponse_NOT_SERVING
		r := s.readiness()
		if r.Ready {
			st = healthpb.HealthCheckResponse_SERVING
		}
		s.logTransitions(seen, r)
		seen = r
		if st != last {
			for _, n := range names {
				s.health.SetServingStatus(n, st)
			}
			last = st
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// logTransitions logs each dependency that went down or came back
// between two readings, once per transition.
func (s *Server) logTransitions(before, now readiness) {
	for name, b := range now.Backends {
		if was, ok := before.Backends[name]; ok && was.Up != b.Up {
			s.logChange("backend", name, b)
		}
	}
	if before.Store != nil && now.Store != nil && before.Store.Up != now.Store.Up {
		s.logChange("store", "keyring", *now.Store)
	}
	if before.Backends != nil && before.Audit.Up != now.Audit.Up {
		s.logChange("audit", "log", now.Audit)
	}
}

func (s *Server) logChange(kind, name string, st backendState) {
	if st.Up {
		s.log.Info(kind+" up", kind, name)
		s.event(kind+".up", name, "")
		return
	}
	s.log.Warn(kind+" down", kind, name, "detail", st.Detail)
	s.event(kind+".down", name, st.Detail)
}

// event tells Options.Events of an event of no request.
func (s *Server) event(typ, subject, detail string) {
	if s.opts.Events != nil {
		s.opts.Events(typ, subject, detail)
	}
}

// tampers is how many tamper records the audit log wrote.
func (s *Server) tampers() uint64 {
	if s.opts.Audit == nil {
		return 0
	}
	return s.opts.Audit.Tampers()
}

// HTTP server timeouts: a slow or idle client cannot hold a connection
// (and its goroutine) for long.
const (
	httpReadTimeout  = 10 * time.Second
	httpWriteTimeout = 30 * time.Second
)

// httpIdleTimeout closes keep-alive connections idle this long; a
// variable so a test can shorten it.
var httpIdleTimeout = 60 * time.Second

// Listeners are where a Server serves: gRPC, the public HTTP listener
// (PublicHandler) and the admin one (AdminHandler).
type Listeners struct {
	GRPC, Public, Admin net.Listener
	// Purposes are the listeners of purposes' own protocols, by purpose
	// name (eth: the Ethereum JSON-RPC endpoint); each is served with the
	// gRPC listener's TLS configuration (client certificates and all).
	Purposes map[string]net.Listener
}

// purposeServers are the HTTP servers of the purposes' own protocols, by
// purpose name, on TLS with the gRPC listener's configuration.
func (s *Server) purposeServers(ls map[string]net.Listener) (map[string]*http.Server, error) {
	out := map[string]*http.Server{}
	for name := range ls {
		var api purpose.HTTPAPI
		for _, p := range s.purposes {
			if a, ok := p.(purpose.HTTPAPI); ok && p.Name() == name {
				api = a
			}
		}
		switch {
		case api == nil:
			return nil, errs.New(errs.InvalidArgument, "purpose %q serves no protocol of its own", name)
		case s.opts.TLS == nil:
			return nil, errs.New(errs.InvalidArgument, "the %s endpoint needs TLS with client certificates", name)
		}
		srv := newHTTPServer(tracing.HTTP("sigil."+name+".http", api.HTTPHandler(s, s.deps)))
		srv.TLSConfig = s.opts.TLS
		out[name] = srv
	}
	return out, nil
}

// newHTTPServer is an HTTP server with Sigil's timeouts.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: httpReadTimeout, WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout}
}

// Serve serves on l until ctx ends, then stops gracefully: health turns
// NOT_SERVING, new requests are refused, and in-flight ones get
// shutdownGrace to finish.
func (s *Server) Serve(ctx context.Context, l Listeners) error {
	public, admin := newHTTPServer(s.PublicHandler()), newHTTPServer(s.AdminHandler())
	others, err := s.purposeServers(l.Purposes)
	if err != nil {
		return err
	}
	errc := make(chan error, 3+len(others))
	go func() { errc <- s.grpc.Serve(l.GRPC) }()
	go func() { errc <- public.Serve(l.Public) }()
	go func() { errc <- admin.Serve(l.Admin) }()
	for name, srv := range others {
		go func() { errc <- srv.ServeTLS(l.Purposes[name], "", "") }()
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	watchers.Go(func() { s.watchHealth(watchCtx) })
	if s.approvals != nil {
		watchers.Go(func() { s.sweepApprovals(watchCtx, s.opts.ApprovalSweep) })
	}
	s.namespaces.Refresh(ctx) // a store down now is reported by its guard; the loop catches up
	watchers.Go(func() { s.namespaces.Run(watchCtx, NamespaceRefresh) })
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopWatch()
	watchers.Wait()
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(shutdownGrace):
		s.grpc.Stop()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	servers := []*http.Server{public, admin}
	for _, srv := range others {
		servers = append(servers, srv)
	}
	for _, h := range servers {
		if herr := h.Shutdown(sctx); err == nil && !errors.Is(herr, http.ErrServerClosed) {
			err = herr
		}
	}
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}
