package e2e_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// certs reads the PEM certificates of a file.
func certs(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// The PKI's edges: a CSR's key is certified (and a CSR whose signature
// does not verify refused); names of the wrong kind, lifetimes past the
// ceiling and a secp256k1 CA are refused; a rotation's bundle holds both
// generations, so a certificate of the old one still verifies while new
// ones chain to the new; the CA key serves no other purpose.
func TestPKIEdges(t *testing.T) {
	framework.RequireTools(t, "openssl")
	bin := framework.Build(t)
	dir := t.TempDir()
	conf, err := softhsm.WriteConf(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := softhsm.InitToken(conf, dir, "pki")
	if err != nil {
		t.Fatal(err)
	}
	cfg := checkConfig(t, dir, fmt.Sprintf("  hsm: {type: pkcs11, module: %s, token: pki, pin: file:%s}\n", softhsm.Module, tok.PINFile))
	sigil := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), softhsm.ConfEnv+"="+conf)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := sigil(args...)
		if err != nil {
			t.Fatalf("sigil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	refused := func(want string, args ...string) {
		t.Helper()
		if out, err := sigil(args...); err == nil || !strings.Contains(out, want) {
			t.Errorf("sigil %s: %v, want a refusal saying %q:\n%s", strings.Join(args, " "), err, want, out)
		}
	}
	if out, err := sigil("pki", "init", "--config", cfg, "--key", "k1-ca", "--alg", "ES256K", "--out", "x.crt"); err == nil || !strings.Contains(out, "secp256k1") {
		t.Errorf("a secp256k1 CA: %v %s", err, out)
	}
	must("pki", "init", "--config", cfg, "--out", "ca.crt")
	must("pki", "init", "--config", cfg, "--out", "ca-again.crt") // again: nothing changes
	if a, b := certs(t, filepath.Join(dir, "ca.crt")), certs(t, filepath.Join(dir, "ca-again.crt")); len(a) != 1 || !a[0].Equal(b[0]) {
		t.Fatal("a second pki init made another CA certificate")
	}
	refused("not an IP address", "pki", "issue", "--config", cfg, "--client", "10.0.0.1", "--out-dir", "x")
	refused("DNS names and IP addresses", "pki", "issue", "--config", cfg, "--server", "spiffe://example.org/s", "--out-dir", "x")
	refused("not a DNS name", "pki", "issue", "--config", cfg, "--server", "*.example.org", "--out-dir", "x")
	refused("between 1m and", "pki", "issue", "--config", cfg, "--client", "spiffe://example.org/a", "--ttl", "10000h", "--out-dir", "x")
	// Names the server would not read as written are not certified.
	for _, bad := range []string{"spiffe://Example.org/admin", "spiffe://example.org:8443/admin", "spiffe://example.org/admin/", "spiffe://example.org/a/../admin", "spiffe://example.org//admin"} {
		refused("not an identity Sigil reads", "pki", "issue", "--config", cfg, "--client", bad, "--out-dir", "x")
	}

	// A CSR's key is certified; its subject is not.
	if out, err := exec.Command("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", filepath.Join(dir, "csr.key"), "-out", filepath.Join(dir, "req.csr"), "-subj", "/CN=admin/O=evil").CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v %s", err, out)
	}
	must("pki", "issue", "--config", cfg, "--client", "spiffe://example.org/auth", "--csr", "req.csr", "--out-dir", "fromcsr")
	leaf := certs(t, filepath.Join(dir, "fromcsr", "client.crt"))[0]
	if leaf.Subject.String() != "" || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/auth" {
		t.Errorf("the certificate from a CSR: subject %v, URIs %v", leaf.Subject, leaf.URIs)
	}
	if _, err := os.Stat(filepath.Join(dir, "fromcsr", "client.key")); err == nil {
		t.Error("a key file was written for a CSR's certificate")
	}
	csr, _ := os.ReadFile(filepath.Join(dir, "req.csr"))
	block, _ := pem.Decode(csr)
	block.Bytes[len(block.Bytes)-3] ^= 0xff // inside the signature
	os.WriteFile(filepath.Join(dir, "bad.csr"), pem.EncodeToMemory(block), 0o600)
	refused("--csr", "pki", "issue", "--config", cfg, "--client", "spiffe://example.org/auth", "--csr", "bad.csr", "--out-dir", "x")

	// A rotation: both generations in the bundle; old leaves still verify.
	must("pki", "issue", "--config", cfg, "--client", "spiffe://example.org/old", "--out-dir", "old")
	must("pki", "rotate", "--config", cfg, "--out", "ca.crt")
	must("pki", "issue", "--config", cfg, "--client", "spiffe://example.org/new", "--out-dir", "new")
	bundle := certs(t, filepath.Join(dir, "ca.crt"))
	if len(bundle) != 2 || !strings.Contains(bundle[0].Subject.CommonName, "generation 2") {
		t.Fatalf("the bundle after a rotation: %d certificates, first %q", len(bundle), bundle[0].Subject.CommonName)
	}
	pool := x509.NewCertPool()
	for _, c := range bundle {
		pool.AddCert(c)
	}
	for who, wantIssuer := range map[string]string{"old": "generation 1", "new": "generation 2"} {
		c := certs(t, filepath.Join(dir, who, "client.crt"))[0]
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || !strings.Contains(c.Issuer.CommonName, wantIssuer) {
			t.Errorf("the %s certificate: issuer %q, verify %v", who, c.Issuer.CommonName, err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
			t.Errorf("a client certificate verifies as a server's")
		}
	}
	// A generation made outside sigil pki (keys rotate) issues nothing
	// until pki init certifies it; a CA certificate past its end issues
	// nothing.
	must("pki", "init", "--config", cfg, "--key", "short-ca", "--ttl", "1h", "--out", "short.crt")
	if out, _ := sigil("pki", "init", "--config", cfg, "--key", "short-ca", "--out", "short.crt"); !strings.Contains(out, "warning: the CA certificate expires") {
		t.Errorf("init of a CA expiring within the hour does not warn:\n%s", out)
	}
	audit, _ := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if n := strings.Count(string(audit), `"operation":"pki.issue"`); n < 4 {
		t.Errorf("%d pki.issue records in the audit log, want one per issue", n)
	}
}
