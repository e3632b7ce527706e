package servertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/mtls"
)

// CA issues throwaway certificates for one test.
type CA struct {
	Cert *x509.Certificate
	Pool *x509.CertPool // trusts Cert
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA valid for the next hour.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Pool: pool, key: key}
}

// Issue makes a certificate; identity is a URI SAN if it has a scheme,
// else a DNS SAN, and the subject CN is "cn-" + identity; notAfter in the
// past makes it expired. A server certificate is for 127.0.0.1.
func (ca *CA) Issue(t testing.TB, identity string, server bool, notAfter time.Time) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "cn-" + identity}, NotAfter: notAfter}
	switch {
	case server:
		tmpl.IPAddresses, tmpl.ExtKeyUsage = []net.IP{net.IPv4(127, 0, 0, 1)}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case strings.Contains(identity, "://"):
		u, _ := url.Parse(identity)
		tmpl.URIs = []*url.URL{u}
	default:
		tmpl.DNSNames = []string{identity}
	}
	return ca.Mint(t, tmpl)
}

// Mint signs a certificate from tmpl, filling in what it leaves unset: a
// serial, a validity starting two hours ago and ending in an hour, and
// client authentication.
func (ca *CA) Mint(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl.SerialNumber, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-2 * time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// WriteFiles writes a server certificate, key and client CA to dir.
func (ca *CA) WriteFiles(t testing.TB, dir string) mtls.Files {
	t.Helper()
	srv := ca.Issue(t, "", true, time.Now().Add(time.Hour))
	f := mtls.Files{Cert: filepath.Join(dir, "s.crt"), Key: filepath.Join(dir, "s.key"), ClientCA: filepath.Join(dir, "ca.crt")}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(srv.PrivateKey)
	os.WriteFile(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate[0]}), 0o644)
	os.WriteFile(f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	os.WriteFile(f.ClientCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644)
	return f
}

// WriteClient writes a client certificate for identity (valid an hour),
// its key and the CA to dir, for clients that take files.
func (ca *CA) WriteClient(t testing.TB, dir, identity string) (cert, key, caFile string) {
	t.Helper()
	c := ca.Issue(t, identity, false, time.Now().Add(time.Hour))
	keyDER, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	cert, key, caFile = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"), filepath.Join(dir, "client-ca.crt")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644)
	return cert, key, caFile
}
