// Package servertest runs a real Sigil server in the test's process: a
// bbolt keyring over a fresh SoftHSM token, the JWKS, the gRPC, public and
// admin listeners on loopback, and optionally mTLS, a policy file and an
// audit log (NewMTLS). It is the harness of the server's own tests and of
// cross-package tests (tests/), as etcd's */testing packages are of
// theirs. softhsmtest.Main must run in the test's TestMain.
package servertest

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/jwks"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	_ "github.com/sigil-hsm/sigil/purpose/all" // the purposes Sigil ships
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

// FaultyBackend makes a real backend unreachable on demand: the narrow
// fault a test cannot get from a live SoftHSM token. Embedding the
// concrete backend keeps all its abilities (key management, pool stats).
type FaultyBackend struct {
	*pkcs11.Backend
	Down atomic.Bool
}

// Health reports the backend down while Down is set.
func (f *FaultyBackend) Health() signer.Health {
	if f.Down.Load() {
		return signer.Health{Detail: "injected: token unreachable"}
	}
	return f.Backend.Health()
}

// Sign fails with Unavailable while Down is set.
func (f *FaultyBackend) Sign(ctx context.Context, ref string, alg signer.Algorithm, in []byte) ([]byte, error) {
	if f.Down.Load() {
		return nil, errs.New(errs.Unavailable, "injected: token unreachable")
	}
	return f.Backend.Sign(ctx, ref, alg, in)
}

// Server is a running server and plaintext clients of it.
type Server struct {
	Keys      sigilv1.KeyServiceClient
	Sign      sigilv1.SigningServiceClient
	Conn      *grpc.ClientConn // plaintext; useless when the server wants TLS
	Addr      string           // gRPC
	PublicURL string           // JWK Sets, the audit key
	AdminURL  string           // health, readiness, metrics
	EthRPC    string           // the Ethereum JSON-RPC address (HTTPS, mTLS), when the server has TLS
	HSM       *FaultyBackend
	Keyring   *keyring.Keyring
	Stop      func() // stops the server and closes its store; also run at cleanup
}

// Start runs a server over the keyring at dbPath, signing in backend
// "hsm-a" (the default); opts may add TLS, authorization and audit.
func Start(t testing.TB, hsm *FaultyBackend, dbPath string, opts ...func(*server.Options)) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := boltstore.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	backends := map[string]signer.Backend{"hsm-a": hsm}
	kr, err := keyring.New(ctx, keyring.Options{Store: store, Backends: backends, DefaultBackend: "hsm-a"})
	if err != nil {
		t.Fatal(err)
	}
	pub := jwks.NewPublisher()
	if err := jwks.Follow(ctx, kr, jwt.Sets{Anchors: store}, pub, slog.Default()); err != nil {
		t.Fatal(err)
	}
	var ls [3]net.Listener
	for i := range ls {
		if ls[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	o := server.Options{Keyring: kr, Backends: backends, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), JWKS: pub, Ledger: store, Anchors: store}
	for _, opt := range opts {
		opt(&o)
	}
	sl := server.Listeners{GRPC: ls[0], Public: ls[1], Admin: ls[2]}
	ethAddr := ""
	if o.TLS != nil {
		eth, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sl.Purposes, ethAddr = map[string]net.Listener{"eth": eth}, eth.Addr().String()
	}
	done := make(chan error, 1)
	go func() { done <- server.New(o).Serve(ctx, sl) }()
	conn, err := grpc.NewClient(ls[0].Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			conn.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
			store.Close()
		})
	}
	t.Cleanup(stop)
	return &Server{Keys: sigilv1.NewKeyServiceClient(conn), Sign: sigilv1.NewSigningServiceClient(conn), Conn: conn,
		Addr: ls[0].Addr().String(), PublicURL: "http://" + ls[1].Addr().String(), AdminURL: "http://" + ls[2].Addr().String(),
		EthRPC: ethAddr, HSM: hsm, Keyring: kr, Stop: stop}
}

// New runs a server over a fresh SoftHSM token and keyring.
func New(t testing.TB, opts ...func(*server.Options)) *Server {
	t.Helper()
	b, err := pkcs11.Open(context.Background(), "hsm-a", pkcs11.Config(softhsmtest.Token(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return Start(t, &FaultyBackend{Backend: b}, filepath.Join(t.TempDir(), "keyring.db"), opts...)
}

// DialAs connects over TLS trusting ca, presenting cert (none if nil).
func (s *Server) DialAs(t testing.TB, ca *CA, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// MTLS is a server that wants client certificates from CA, authorizes
// by a policy file and writes an audit log.
type MTLS struct {
	*Server
	CA       *CA
	Authz    *authz.Authorizer
	AuditLog string     // its path
	Files    mtls.Files // the server's certificate, key and client CA, re-read when they change
}

// NewMTLS runs a server with mTLS, the policy document policy and an
// audit log.
func NewMTLS(t testing.TB, policy string, opts ...func(*server.Options)) *MTLS {
	t.Helper()
	dir := t.TempDir()
	ca := NewCA(t)
	files := ca.WriteFiles(t, dir)
	tlsCfg, err := mtls.ServerConfig(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(policy), 0o600)
	az, err := authz.Load(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	auditPath := filepath.Join(dir, "audit.jsonl")
	al, err := audit.Open(context.Background(), audit.Options{Path: auditPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	s := New(t, append([]func(*server.Options){func(o *server.Options) { o.TLS, o.Authz, o.Audit = tlsCfg, az, al }}, opts...)...)
	return &MTLS{Server: s, CA: ca, Authz: az, AuditLog: auditPath, Files: files}
}

// Client connects with a fresh certificate for identity, valid an hour.
func (e *MTLS) Client(t testing.TB, identity string) *grpc.ClientConn {
	return e.DialAs(t, e.CA, ptr(e.CA.Issue(t, identity, false, time.Now().Add(time.Hour))))
}

func ptr[T any](v T) *T { return &v }
