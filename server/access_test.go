package server_test

import (
	"context"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/mtls"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server"
)

// testCA issues certificates for the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t testing.TB) *testCA {
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
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes a certificate; identity is a URI SAN if it has a scheme,
// else a DNS SAN, and the subject CN is "cn-" + identity; notAfter in the
// past makes it expired.
func (ca *testCA) issue(t testing.TB, identity string, server bool, notAfter time.Time) tls.Certificate {
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
	return ca.mint(t, tmpl)
}

// mint signs a certificate from tmpl, filling in what it leaves unset: a
// serial, a validity starting two hours ago and ending in an hour, and
// client authentication.
func (ca *testCA) mint(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
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
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// writeFiles writes a server certificate, key and client CA to dir.
func (ca *testCA) writeFiles(t testing.TB, dir string) mtls.Files {
	t.Helper()
	srv := ca.issue(t, "", true, time.Now().Add(time.Hour))
	f := mtls.Files{Cert: filepath.Join(dir, "s.crt"), Key: filepath.Join(dir, "s.key"), ClientCA: filepath.Join(dir, "ca.crt")}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(srv.PrivateKey)
	os.WriteFile(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate[0]}), 0o644)
	os.WriteFile(f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	os.WriteFile(f.ClientCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o644)
	return f
}

func (h *harness) dialAs(t testing.TB, ca *testCA, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

const testPolicy = `
rules:
  - identity: spiffe://example.org/auth-server
    keys: ["auth-*"]
    allow: [sign.jwt, keys.read]
  - identity: dns:treasury.internal
    keys: ["treasury-*"]
    allow: [eth.sign_tx, eth.sign_message, eth.sign_typed_data]
  - identity: spiffe://example.org/raw-signer
    keys: ["raw-*"]
    allow: [sign.raw]
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/all/*
    keys: ["*"]
    allow: [sign.raw, sign.jwt, eth.sign_tx, eth.sign_message, eth.sign_typed_data, keys.read, keys.admin]
`

type mtlsEnv struct {
	h        *harness
	ca       *testCA
	az       *authz.Authorizer
	auditLog string
}

func newMTLSEnv(t testing.TB, opts ...func(*server.Options)) *mtlsEnv {
	t.Helper()
	dir := t.TempDir()
	ca := newCA(t)
	files := ca.writeFiles(t, dir)
	tlsCfg, err := mtls.ServerConfig(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(testPolicy), 0o600)
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
	h := newHarness(t, append([]func(*server.Options){func(o *server.Options) { o.TLS, o.Authz, o.Audit = tlsCfg, az, al }}, opts...)...)
	return &mtlsEnv{h: h, ca: ca, az: az, auditLog: auditPath}
}

func (e *mtlsEnv) client(t testing.TB, identity string) *grpc.ClientConn {
	cert := e.ca.issue(t, identity, false, time.Now().Add(time.Hour))
	return e.h.dialAs(t, e.ca, &cert)
}

// call runs the RPC of one operation on key id and returns its error.
func call(conn *grpc.ClientConn, op authz.Op, id string) error {
	ctx := context.Background()
	d := make([]byte, 32)
	var err error
	switch op {
	case authz.SignRaw:
		_, err = sigilv1.NewSigningServiceClient(conn).Sign(ctx, &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: d}})
	case authz.SignJWT:
		_, err = sigilv1.NewJWTServiceClient(conn).SignJWT(ctx, &sigilv1.SignJWTRequest{KeyId: id, ClaimsJson: []byte(`{"sub":"x"}`)})
	case authz.EthSignTx:
		_, err = sigilv1.NewEthereumServiceClient(conn).SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: id, Transaction: &sigilv1.SignTransactionRequest_TransactionJson{
			TransactionJson: []byte(`{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x1","gas":"0x5208","gasPrice":"0x1"}`)}})
	case authz.EthSignMessage:
		_, err = sigilv1.NewEthereumServiceClient(conn).SignMessage(ctx, &sigilv1.SignMessageRequest{KeyId: id, Message: []byte("m")})
	case authz.EthSignTypedData:
		_, err = sigilv1.NewEthereumServiceClient(conn).SignTypedData(ctx, &sigilv1.SignTypedDataRequest{KeyId: id, TypedDataJson: []byte(
			`{"types":{"EIP712Domain":[{"name":"name","type":"string"}],"M":[{"name":"a","type":"string"}]},"primaryType":"M","domain":{"name":"d"},"message":{"a":"b"}}`)})
	case authz.KeysRead:
		_, err = sigilv1.NewKeyServiceClient(conn).GetKey(ctx, &sigilv1.GetKeyRequest{Id: id})
	case authz.KeysAdmin:
		_, err = sigilv1.NewKeyServiceClient(conn).RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: id})
	}
	return err
}

func TestEveryOperationAllowedAndDenied(t *testing.T) {
	e := newMTLSEnv(t)
	ops := e.client(t, "spiffe://example.org/ops")
	for _, k := range []*sigilv1.CreateKeyRequest{
		{Id: "auth-jwt", Algorithm: "ES256", Purpose: "jwt"},
		{Id: "raw-1", Algorithm: "ES256", Purpose: "raw"},
		{Id: "treasury-1", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}},
	} {
		if _, err := sigilv1.NewKeyServiceClient(ops).CreateKey(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	clients := map[string]*grpc.ClientConn{}
	for _, id := range []string{"spiffe://example.org/auth-server", "treasury.internal", "spiffe://example.org/raw-signer", "spiffe://example.org/ops", "spiffe://example.org/stranger"} {
		clients[id] = e.client(t, id)
	}
	// What each operation is tried on, and who may do it there.
	cases := []struct {
		op      authz.Op
		key     string
		allowed map[string]bool
	}{
		{authz.SignJWT, "auth-jwt", map[string]bool{"spiffe://example.org/auth-server": true}},
		{authz.SignRaw, "raw-1", map[string]bool{"spiffe://example.org/raw-signer": true}},
		{authz.EthSignTx, "treasury-1", map[string]bool{"treasury.internal": true}},
		{authz.EthSignMessage, "treasury-1", map[string]bool{"treasury.internal": true}},
		{authz.EthSignTypedData, "treasury-1", map[string]bool{"treasury.internal": true}},
		{authz.KeysRead, "auth-jwt", map[string]bool{"spiffe://example.org/auth-server": true, "spiffe://example.org/ops": true}},
		{authz.KeysRead, "treasury-1", map[string]bool{"spiffe://example.org/ops": true}},
		{authz.KeysAdmin, "auth-jwt", map[string]bool{"spiffe://example.org/ops": true}},
		// A jwt signer cannot raw-sign its own key, nor use another's.
		{authz.SignRaw, "auth-jwt", map[string]bool{}},
		{authz.SignJWT, "treasury-1", map[string]bool{}},
		// Denial gives no hint whether a key exists.
		{authz.SignJWT, "auth-missing", map[string]bool{"spiffe://example.org/auth-server": true}},
	}
	for _, c := range cases {
		for id, conn := range clients {
			err := call(conn, c.op, c.key)
			denied := status.Code(err) == codes.PermissionDenied
			if c.allowed[id] == denied {
				t.Errorf("%s %s on %s: %v (allowed by policy: %v)", id, c.op, c.key, err, c.allowed[id])
			}
			if denied && status.Convert(err).Message() != "permission denied" {
				t.Errorf("denial says more than it should: %v", err)
			}
		}
	}
	if err := call(clients["spiffe://example.org/auth-server"], authz.SignJWT, "auth-missing"); status.Code(err) != codes.NotFound {
		t.Errorf("an allowed client asking for a missing key: %v", err)
	}
	// Listing shows only the keys one may read.
	list, err := sigilv1.NewKeyServiceClient(clients["spiffe://example.org/auth-server"]).ListKeys(context.Background(), &sigilv1.ListKeysRequest{})
	if err != nil || len(list.GetKeys()) != 1 || list.GetKeys()[0].GetId() != "auth-jwt" {
		t.Fatalf("listing: %v %v", list, err)
	}
	// Every decision is in the audit log, whose chain verifies (this
	// server signs no checkpoints: it has no audit key).
	r, err := audit.Verify([]string{e.auditLog}, nil, nil)
	if err != nil || r.Records < len(cases)*len(clients) || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "no checkpoint") {
		t.Fatalf("audit: %d records, %v %v", r.Records, r.Problems, err)
	}
	log, _ := os.ReadFile(e.auditLog)
	if !strings.Contains(string(log), `"identity":"dns:treasury.internal","operation":"eth.sign_message","key_id":"treasury-1"`) {
		t.Error("an allowed request does not name the identity the rule allowed")
	}
	if !strings.Contains(string(log), `"identities":["dns:treasury.internal","cn:cn-treasury.internal"],"operation":"sign.jwt","key_id":"auth-jwt","outcome":"denied","code":"PermissionDenied"`) {
		t.Error("a denial is missing from the audit log")
	}
}

func TestHandshakeRefusesForeignExpiredAndMissingCertificates(t *testing.T) {
	e := newMTLSEnv(t)
	foreign := newCA(t).issue(t, "spiffe://example.org/ops", false, time.Now().Add(time.Hour))
	expired := e.ca.issue(t, "spiffe://example.org/ops", false, time.Now().Add(-time.Minute))
	for name, conn := range map[string]*grpc.ClientConn{
		"foreign CA": e.h.dialAs(t, e.ca, &foreign),
		"expired":    e.h.dialAs(t, e.ca, &expired),
		"none":       e.h.dialAs(t, e.ca, nil),
	} {
		if err := call(conn, authz.KeysRead, "x"); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v", name, err)
		}
	}
	insecure := e.h.conn // plaintext against a TLS listener
	if _, err := sigilv1.NewKeyServiceClient(insecure).ListKeys(context.Background(), &sigilv1.ListKeysRequest{}); err == nil {
		t.Error("a plaintext client got an answer")
	}
}

func TestPolicyReload(t *testing.T) {
	e := newMTLSEnv(t)
	if _, err := sigilv1.NewKeyServiceClient(e.client(t, "spiffe://example.org/ops")).CreateKey(context.Background(),
		&sigilv1.CreateKeyRequest{Id: "raw-2", Algorithm: "EdDSA"}); err != nil {
		t.Fatal(err)
	}
	newcomer := e.client(t, "spiffe://example.org/newcomer")
	if status.Code(call(newcomer, authz.KeysRead, "raw-2")) != codes.PermissionDenied {
		t.Fatal("newcomer allowed before the reload")
	}
	file := filepath.Join(filepath.Dir(e.auditLog), "policy.yaml")
	os.WriteFile(file, []byte(testPolicy+"  - identity: spiffe://example.org/newcomer\n    keys: [\"raw-*\"]\n    allow: [keys.read]\n"), 0o600)
	if err := e.az.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := call(newcomer, authz.KeysRead, "raw-2"); err != nil {
		t.Fatalf("after the reload: %v", err)
	}
	// A bad policy is refused, naming its line, and the old one stays.
	os.WriteFile(file, []byte("rules:\n  - identity: x\n    keys: [\"*\"]\n    allow: [sign.everything]\n"), 0o600)
	if err := e.az.Reload(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad policy: %v", err)
	}
	if err := call(newcomer, authz.KeysRead, "raw-2"); err != nil {
		t.Fatalf("the old policy did not stay: %v", err)
	}
}
