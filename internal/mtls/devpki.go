package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// DevClientIdentity is the identity of the client certificate --dev makes,
// in the policy's typed spelling: its URI SAN.
const DevClientIdentity = "spiffe://sigil.dev/dev-client"

// DevPKI is the local CA and the certificates --dev uses.
type DevPKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// Server is the server's files.
func (p DevPKI) Server() Files { return Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.CA} }

// EnsureDevPKI makes a CA, a loopback server certificate and a client
// certificate for DevClientIdentity in dir, unless they exist. Keys are
// written 0600.
func EnsureDevPKI(dir string) (DevPKI, error) {
	p := DevPKI{
		CA: filepath.Join(dir, "ca.crt"), ServerCert: filepath.Join(dir, "server.crt"), ServerKey: filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key"),
	}
	if _, err := os.Stat(p.ClientKey); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	caKey, caCert, err := newCert(&x509.Certificate{Subject: pkix.Name{CommonName: "Sigil dev CA"}, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}, nil, nil)
	if err != nil {
		return p, err
	}
	if err := writePEM(p.CA, "CERTIFICATE", caCert.Raw, 0o644); err != nil {
		return p, err
	}
	spiffe, _ := url.Parse(DevClientIdentity)
	for _, c := range []struct {
		cert, key string
		tmpl      *x509.Certificate
	}{
		{p.ServerCert, p.ServerKey, &x509.Certificate{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}},
		{p.ClientCert, p.ClientKey, &x509.Certificate{Subject: pkix.Name{CommonName: "dev-client"}, URIs: []*url.URL{spiffe},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
	} {
		c.tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		key, cert, err := newCert(c.tmpl, caCert, caKey)
		if err != nil {
			return p, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return p, err
		}
		if err := writePEM(c.key, "PRIVATE KEY", der, 0o600); err != nil {
			return p, err
		}
		if err := writePEM(c.cert, "CERTIFICATE", cert.Raw, 0o644); err != nil {
			return p, err
		}
	}
	return p, nil
}

// newCert makes a P-256 key and a certificate for it, signed by parent
// (self-signed if nil), valid for two years.
func newCert(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, time.Now().Add(-time.Hour), time.Now().Add(2*365*24*time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}
