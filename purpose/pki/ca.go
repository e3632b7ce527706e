package pki

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/signer"
)

// Lifetimes. A leaf is short-lived (mTLS certificates are re-issued, not
// revoked: Sigil's servers check no revocation list), and never outlives
// its CA certificate.
const (
	DefaultCATTL     = 10 * 365 * 24 * time.Hour
	DefaultServerTTL = 90 * 24 * time.Hour
	DefaultClientTTL = 30 * 24 * time.Hour
	MaxLeafTTL       = 397 * 24 * time.Hour // the CA/Browser Forum's ceiling
)

// CA issues certificates with keys of purpose pki.
type CA struct {
	Keys    *keyring.Keyring
	Anchors keyring.Anchors
	Now     func() time.Time
}

func (c CA) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// anchor is where generation n of key id keeps its CA certificate.
func anchor(id string, n int) string { return fmt.Sprintf("pki/%s/%d", id, n) }

// Certify returns the certificate of key id's active generation, making
// it (self-signed, valid for ttl) if the generation has none yet, which
// made says. Two racing calls keep the first certificate stored.
func (c CA) Certify(ctx context.Context, id string, ttl time.Duration) (cert *x509.Certificate, made bool, err error) {
	sg, err := c.Keys.ForSigning(ctx, id, Name)
	if err != nil {
		return nil, false, err
	}
	return c.certify(ctx, sg, ttl)
}

func (c CA) certify(ctx context.Context, sg keyring.Signing, ttl time.Duration) (*x509.Certificate, bool, error) {
	name := anchor(sg.Key.ID, sg.Generation.Number)
	if der, err := c.Anchors.GetAnchor(ctx, name); err == nil {
		cert, err := x509.ParseCertificate(der)
		return cert, false, err
	} else if !errs.Is(err, errs.NotFound) {
		return nil, false, err
	}
	if ttl == 0 {
		ttl = DefaultCATTL
	}
	if ttl < time.Hour || ttl > 30*365*24*time.Hour {
		return nil, false, errs.New(errs.InvalidArgument, "the CA's ttl %v: between 1h and 30 years", ttl)
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               subject(sg),
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // it certifies leaves only
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SignatureAlgorithm:    sigAlg(sg.Key.Algorithm),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, sg.Generation.Public(), keySigner{ctx, sg})
	if err != nil {
		return nil, false, errs.New(errs.Internal, "self-signing the CA certificate of %q: %w", sg.Key.ID, err)
	}
	if err := c.Anchors.CreateAnchor(ctx, name, der); errs.Is(err, errs.AlreadyExists) {
		return c.certify(ctx, sg, ttl) // another made it first: theirs stands
	} else if err != nil {
		return nil, false, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, true, err
}

// subject names a CA generation: the key and the generation, so a bundle
// spanning a rotation tells its certificates apart.
func subject(sg keyring.Signing) pkix.Name {
	return pkix.Name{Organization: []string{"Sigil"}, CommonName: fmt.Sprintf("Sigil CA %s (generation %d)", sg.Key.ID, sg.Generation.Number)}
}

// Bundle is the CA certificates of key id's trusted generations, newest
// first (a generation whose certificate was never made is left out).
func (c CA) Bundle(ctx context.Context, id string) ([]*x509.Certificate, error) {
	k, err := c.Keys.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := k.CheckPurpose(Name); err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for i := len(k.Generations) - 1; i >= 0; i-- {
		g := k.Generations[i]
		if !g.Trusted() {
			continue
		}
		der, err := c.Anchors.GetAnchor(ctx, anchor(id, g.Number))
		if errs.Is(err, errs.NotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, errs.New(errs.Internal, "the stored CA certificate of %q generation %d: %w", id, g.Number, err)
		}
		out = append(out, cert)
	}
	if len(out) == 0 {
		return nil, errs.New(errs.FailedPrecondition, "key %q has no CA certificate yet (sigil pki init)", id)
	}
	return out, nil
}

// Usage is what a leaf certificate is for.
type Usage int

const (
	Server Usage = iota + 1
	Client
)

// Leaf is a certificate to issue.
type Leaf struct {
	Usage Usage
	// Names: for a server, DNS names and IP addresses; for a client, its
	// identities as Sigil's policy names them: URIs (spiffe://…) or DNS
	// names.
	Names  []string
	Public crypto.PublicKey
	TTL    time.Duration // DefaultServerTTL or DefaultClientTTL if zero
}

// Issue certifies l with key id's active generation (certifying that
// generation first if it has no certificate) and returns the certificate
// and the CA certificate it chains to.
func (c CA) Issue(ctx context.Context, id string, l Leaf) (leaf, ca *x509.Certificate, err error) {
	tmpl, err := l.template()
	if err != nil {
		return nil, nil, err
	}
	sg, err := c.Keys.ForSigning(ctx, id, Name)
	if err != nil {
		return nil, nil, err
	}
	// Only a generation certified by init or rotate issues: one made
	// otherwise (keys rotate) is in no bundle anyone deployed.
	der, err := c.Anchors.GetAnchor(ctx, anchor(sg.Key.ID, sg.Generation.Number))
	if errs.Is(err, errs.NotFound) {
		return nil, nil, errs.New(errs.FailedPrecondition, "generation %d of CA key %q has no CA certificate (it was rotated outside sigil pki): run sigil pki init to certify it, and deploy the bundle it writes", sg.Generation.Number, id)
	}
	if err != nil {
		return nil, nil, err
	}
	if ca, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, errs.New(errs.Internal, "the stored CA certificate: %w", err)
	}
	now := c.now()
	if !now.Before(ca.NotAfter.Add(-time.Minute)) {
		return nil, nil, errs.New(errs.FailedPrecondition, "the CA certificate of %q generation %d expired at %s: run sigil pki rotate", id, sg.Generation.Number, ca.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Minute), now.Add(l.TTL)
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	tmpl.SignatureAlgorithm = sigAlg(sg.Key.Algorithm)
	der, err = x509.CreateCertificate(rand.Reader, tmpl, ca, l.Public, keySigner{ctx, sg})
	if err != nil {
		return nil, nil, errs.New(errs.Internal, "issuing: %w", err)
	}
	if leaf, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, err
	}
	if err := l.checkIdentities(leaf); err != nil {
		return nil, nil, err
	}
	return leaf, ca, nil
}

// checkIdentities makes sure a client certificate gives the server
// exactly the identities asked for, as its policy spells them: a name the
// server would not read (spiffe://Example.org/…, a port, a "..") is no
// certificate to hand out.
func (l *Leaf) checkIdentities(c *x509.Certificate) error {
	if l.Usage != Client {
		return nil
	}
	got := map[string]bool{}
	for _, id := range identity.Of(c) {
		got[id.String()] = true
	}
	for _, n := range l.Names {
		want := n
		if !strings.Contains(n, "://") {
			want = identity.DNSPrefix + strings.ToLower(n)
		}
		if !got[want] {
			return errs.New(errs.Internal, "the certificate does not give the identity %q", n)
		}
	}
	if len(got) != len(l.Names) {
		return errs.New(errs.Internal, "the certificate would give %d identities, not the %d asked", len(got), len(l.Names))
	}
	return nil
}

// template checks l and makes its certificate template.
func (l *Leaf) template() (*x509.Certificate, error) {
	if len(l.Names) == 0 {
		return nil, errs.New(errs.InvalidArgument, "a certificate needs at least one name")
	}
	switch l.Usage {
	case Server:
		l.TTL = cmpOr(l.TTL, DefaultServerTTL)
	case Client:
		l.TTL = cmpOr(l.TTL, DefaultClientTTL)
	default:
		return nil, errs.New(errs.InvalidArgument, "a certificate is for a server or a client")
	}
	if l.TTL < time.Minute || l.TTL > MaxLeafTTL {
		return nil, errs.New(errs.InvalidArgument, "ttl %v: between 1m and %v", l.TTL, MaxLeafTTL)
	}
	if err := checkPublic(l.Public); err != nil {
		return nil, err
	}
	t := &x509.Certificate{SerialNumber: serial(), KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
	if _, ok := l.Public.(*rsa.PublicKey); ok {
		t.KeyUsage |= x509.KeyUsageKeyEncipherment // TLS 1.2 RSA key exchange
	}
	for _, n := range l.Names {
		if err := addName(t, l.Usage, n); err != nil {
			return nil, err
		}
	}
	// No subject CN: the names are the SANs (critical, with an empty
	// subject), and a CN would be one more identity, cn:…, to the server.
	if l.Usage == Server {
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return t, nil
}

// addName adds one name to t's subject alternative names: an IP address
// (servers only), a URI with a scheme and host (clients only), or a DNS
// name.
func addName(t *x509.Certificate, u Usage, n string) error {
	if ip := net.ParseIP(n); ip != nil {
		if u != Server {
			return errs.New(errs.InvalidArgument, "%q: a client identity is a URI (spiffe://…) or a DNS name, not an IP address", n)
		}
		t.IPAddresses = append(t.IPAddresses, ip)
		return nil
	}
	if strings.Contains(n, "://") {
		p, err := url.Parse(n)
		if err != nil || p.Scheme == "" || p.Host == "" || p.User != nil || p.RawQuery != "" || p.Fragment != "" {
			return errs.New(errs.InvalidArgument, "%q is not a URI identity (scheme://host/path)", n)
		}
		if u != Client {
			return errs.New(errs.InvalidArgument, "%q: a server is named by DNS names and IP addresses", n)
		}
		if id, err := identity.Parse(n); err != nil || id.String() != n {
			return errs.New(errs.InvalidArgument, "%q is not an identity Sigil reads from a certificate as written (a SPIFFE ID is spiffe://trust-domain/path: lower-case domain, no port, no . or .. segments)", n)
		}
		t.URIs = append(t.URIs, p)
		return nil
	}
	if !validDNS(n) {
		return errs.New(errs.InvalidArgument, "%q is not a DNS name, an IP address or a URI", n)
	}
	t.DNSNames = append(t.DNSNames, strings.ToLower(n))
	return nil
}

// validDNS accepts a DNS name of letters, digits and hyphens (a leading
// "*." for a server wildcard is refused: name the hosts).
func validDNS(n string) bool {
	if n == "" || len(n) > 253 || strings.HasSuffix(n, ".") {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

// checkPublic accepts the leaf keys TLS peers take.
func checkPublic(pub crypto.PublicKey) error {
	for _, a := range []signer.Algorithm{signer.ES256, signer.ES384, signer.RS256, signer.EdDSA} {
		if a.CheckPublic(pub) == nil {
			return nil
		}
	}
	return errs.New(errs.InvalidArgument, "the certified key must be ECDSA P-256 or P-384, RSA 2048 or 3072, or Ed25519; got %T", pub)
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// serial is a random positive 128-bit serial number.
func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

// sigAlg is the X.509 signature algorithm of a key's algorithm; 0 lets
// crypto/x509 choose from the key (ECDSA by its curve, Ed25519).
func sigAlg(a signer.Algorithm) x509.SignatureAlgorithm {
	switch a {
	case signer.RS256:
		return x509.SHA256WithRSA
	case signer.PS256:
		return x509.SHA256WithRSAPSS
	}
	return 0
}

// keySigner is a crypto.Signer over a generation in its backend, for
// crypto/x509 to sign with.
type keySigner struct {
	ctx context.Context
	sg  keyring.Signing
}

func (s keySigner) Public() crypto.PublicKey { return s.sg.Generation.Public() }

func (s keySigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	alg := s.sg.Key.Algorithm
	if opts.HashFunc() != alg.Hash() {
		return nil, errs.New(errs.Internal, "%s signs %v digests, not %v", alg, alg.Hash(), opts.HashFunc())
	}
	if pss, ok := opts.(*rsa.PSSOptions); ok != (alg == signer.PS256) || ok && pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != 32 {
		return nil, errs.New(errs.Internal, "%s cannot sign with %T", alg, opts)
	}
	sig, err := s.sg.Sign(s.ctx, digest)
	if err != nil || !alg.IsECDSA() {
		return sig, err
	}
	return signer.RawToDER(sig) // X.509 carries ECDSA signatures as DER
}

// PEM encodes certificates as PEM blocks.
func PEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
