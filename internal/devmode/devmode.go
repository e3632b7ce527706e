// Package devmode prepares the data directory of `sigil serve --dev`: a
// SoftHSM token with a random PIN kept in a 0600 file, the bbolt keyring,
// the audit log, a local CA with a server and a client certificate (dev
// mode speaks mTLS like production), and a client.json that tells client
// commands where the server listens and which certificate to present.
// On later starts it reuses them, so keys survive restarts.
//
// It is internal: it is the one-command default for development, not a
// deployment tool.
package devmode

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/sigil-hsm/sigil/internal/config"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/softhsm"
)

// TokenLabel is the label of the dev token.
const TokenLabel = "sigil-dev"

// BackendName is the name of the dev backend in the generated config.
const BackendName = "dev-hsm"

// clientFile is where the server writes how to reach it.
const clientFile = "client.json"

// Client is what a client command needs to reach a dev server.
type Client struct {
	Addr      string `json:"addr"`
	HTTPAddr  string `json:"http_addr"`  // the public listener: JWK Sets, the audit key
	AdminAddr string `json:"admin_addr"` // health, readiness, metrics
	// Namespace, if set, is the namespace clients reading this file call
	// in unless they name another.
	Namespace string `json:"namespace,omitempty"`
	EthRPC    string `json:"ethrpc_addr"` // Ethereum JSON-RPC (mTLS)
	CA        string `json:"ca"`
	Cert      string `json:"cert"`
	Key       string `json:"key"`
}

// Addrs are where the dev server listens; all on loopback.
type Addrs struct {
	GRPC, HTTP, Admin, EthRPC string
	// EthUpstream, if set, is the execution client behind the Ethereum
	// JSON-RPC endpoint (a local geth --dev, say).
	EthUpstream string
	// Console is the console's origin once listening (https://localhost:PORT).
	Console string
}

// Prepare creates or reuses dir and returns the configuration the dev
// server runs with. Every address must be on loopback.
func Prepare(dir string, a Addrs) (*config.Config, error) {
	for _, a := range []string{a.GRPC, a.HTTP, a.Admin, a.EthRPC} {
		if err := loopbackOnly(a); err != nil {
			return nil, err
		}
	}
	if err := softhsm.Available(); err != nil {
		return nil, errs.New(errs.FailedPrecondition, "--dev needs SoftHSM: %w", err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	hsmDir := filepath.Join(dir, "softhsm")
	if err := os.MkdirAll(hsmDir, 0o700); err != nil {
		return nil, err
	}
	conf, err := softhsm.WriteConf(hsmDir)
	if err != nil {
		return nil, err
	}
	os.Setenv(softhsm.ConfEnv, conf) // read by the module when the backend loads it
	pinFile := filepath.Join(hsmDir, TokenLabel+".pin")
	if _, err := os.Stat(pinFile); os.IsNotExist(err) {
		if _, err := softhsm.InitToken(conf, hsmDir, TokenLabel); err != nil {
			return nil, err
		}
	}
	pki, err := mtls.EnsureDevPKI(filepath.Join(dir, "tls"))
	if err != nil {
		return nil, err
	}
	yaml := fmt.Sprintf(`grpc: {addr: %q, tls: {cert: %q, key: %q, client_ca: %q}}
http: {public_addr: %q, admin_addr: %q}
ethrpc: {addr: %q%s}
store: {type: bbolt, path: %q}
audit: {path: %q}
backends:
  %s: {type: pkcs11, module: %q, token: %q, pin: %q, sessions: 8}
`, a.GRPC, pki.ServerCert, pki.ServerKey, pki.CA, a.HTTP, a.Admin, a.EthRPC, upstreamYAML(a.EthUpstream), filepath.Join(dir, "keyring.db"), filepath.Join(dir, "audit.jsonl"),
		BackendName, softhsm.Module, TokenLabel, "file:"+pinFile)
	return config.Parse(strings.NewReader(yaml), true)
}

// upstreamYAML is the ethrpc.upstream setting for url, or none.
func upstreamYAML(url string) string {
	if url == "" {
		return ""
	}
	return fmt.Sprintf(", upstream: {url: %q}", url)
}

// ClientFor is what the dev client needs to reach a dev server at the
// given addresses: the dev CA and the dev client's certificate.
func ClientFor(dir string, a Addrs) (Client, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Client{}, err
	}
	pki, err := mtls.EnsureDevPKI(filepath.Join(abs, "tls"))
	return Client{Addr: a.GRPC, HTTPAddr: a.HTTP, AdminAddr: a.Admin, EthRPC: a.EthRPC, CA: pki.CA, Cert: pki.ClientCert, Key: pki.ClientKey}, err
}

func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return errs.New(errs.InvalidArgument, "--dev address %q is not host:port", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return errs.New(errs.InvalidArgument, "--dev listens on loopback only, not %q", addr)
	}
	return nil
}

// WriteClient records where the dev server listens, for --data-dir.
func WriteClient(dir string, c Client) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, clientFile), append(b, '\n'), 0o600)
}

// ReadClient reads what WriteClient wrote.
func ReadClient(dir string) (Client, error) {
	var c Client
	b, err := os.ReadFile(filepath.Join(dir, clientFile))
	if err != nil {
		return c, errs.New(errs.FailedPrecondition, "no dev server has run with --data-dir %s: %w", dir, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, errs.New(errs.FailedPrecondition, "%s: %w", filepath.Join(dir, clientFile), err)
	}
	return c, nil
}
