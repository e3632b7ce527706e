// Package mtls sets up mutual TLS for the gRPC listener: TLS 1.3, client
// certificates required and verified against the client CA, and all three
// files re-read when they change, so certificates rotate without a
// restart. It also makes the local PKI of `sigil serve --dev`; package
// identity names a client by its certificate.
//
// It is internal: the configuration file is the contract.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// recheck is how often a handshake looks at the files' modification times.
const recheck = time.Second

// Files are the server's certificate, key and client CA bundle.
type Files struct{ Cert, Key, ClientCA string }

// ServerConfig returns a TLS configuration that requires a client
// certificate from the client CA and reloads the files when they change.
// It fails now if they cannot be loaded; a later bad change is refused
// and the previous files stay in use.
func ServerConfig(f Files, log func(msg string, err error)) (*tls.Config, error) {
	r := &reloader{files: f, log: log}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.get(), nil }}, nil
}

type reloader struct {
	files   Files
	log     func(string, error)
	mu      sync.Mutex
	cfg     *tls.Config
	stamp   string
	checked time.Time
}

func (r *reloader) get() *tls.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= recheck {
		r.checked = time.Now()
		if st := r.files.stamp(); st != r.stamp {
			if _, err := r.loadLocked(); err != nil && r.log != nil {
				r.log("TLS files changed but do not load; keeping the previous ones", err)
			}
		}
	}
	return r.cfg
}

func (r *reloader) load() (*tls.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked()
}

func (r *reloader) loadLocked() (*tls.Config, error) {
	stamp := r.files.stamp()
	cfg, err := r.files.config()
	if err != nil {
		return nil, err
	}
	r.cfg, r.stamp = cfg, stamp
	return cfg, nil
}

// stamp summarises the files' sizes and modification times.
func (f Files) stamp() string {
	s := ""
	for _, p := range []string{f.Cert, f.Key, f.ClientCA} {
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return s
}

func (f Files) config() (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" || f.ClientCA == "" {
		return nil, errs.New(errs.InvalidArgument, "grpc.tls: cert, key and client_ca are all required")
	}
	fi, err := os.Stat(f.Key)
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "grpc.tls.key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, errs.New(errs.InvalidArgument, "grpc.tls.key: %s is readable by group or others (mode %v); chmod 600 it", f.Key, fi.Mode().Perm())
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "grpc.tls: loading cert and key: %w", err)
	}
	pool, err := LoadPool(f.ClientCA)
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "grpc.tls.client_ca: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}, nil
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificates in %s", file)
	}
	return pool, nil
}

// ClientConfig is the TLS configuration of a client presenting cert/key
// and trusting the server certificates ca signed.
func ClientConfig(cert, key, ca string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	pool, err := LoadPool(ca)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, RootCAs: pool}, nil
}
