package client_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	ethcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
	"github.com/go-jose/go-jose/v4"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/client"
	clienteth "github.com/sigil-hsm/sigil/client/eth"
	"github.com/sigil-hsm/sigil/internal/testutil/backendtest"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
	"github.com/sigil-hsm/sigil/signer"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 8) }

const policy = `
rules:
  - identity: spiffe://example.org/app
    keys: ["*"]
    allow: [keys.admin, keys.read, sign.raw, sign.jwt, eth.sign_tx, eth.sign_message, eth.sign_typed_data]
`

// dial runs a server with mTLS and returns a client of it, as a Go
// program would make one: from certificate files.
func dial(t *testing.T) (*client.Client, *servertest.MTLS) {
	t.Helper()
	e := servertest.NewMTLS(t, policy)
	return dialAs(t, e, "spiffe://example.org/app"), e
}

// dialAs is a client of e with a certificate for identity.
func dialAs(t *testing.T, e *servertest.MTLS, identity string) *client.Client {
	t.Helper()
	cert, key, ca := e.CA.WriteClient(t, t.TempDir(), identity)
	c, err := client.Dial(context.Background(), client.Options{Addr: e.Addr, CertFile: cert, KeyFile: key, CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func create(t *testing.T, c *client.Client, req *sigilv1.CreateKeyRequest) {
	t.Helper()
	if _, err := c.Keys.CreateKey(context.Background(), req); err != nil {
		t.Fatal(err)
	}
}

// The crypto.Signer serves Go's x509 (and openssl verifies the
// certificate), a TLS handshake, an SSH certificate and a go-jose JWS,
// for every algorithm those take.
func TestSignerServesGoCrypto(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	for _, alg := range signer.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			id := "k-" + strings.ToLower(string(alg))
			create(t, c, &sigilv1.CreateKeyRequest{Id: id, Algorithm: string(alg)})
			s, err := c.Signer(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if alg == signer.ES256K { // x509, TLS, SSH and go-jose know no secp256k1
				in := alg.Input([]byte("k1"))
				sig, err := s.Sign(nil, in, alg.Hash())
				if err != nil || signer.Verify(s.Public(), alg, in, mustRaw(t, s, sig)) != nil {
					t.Fatalf("ES256K: %v", err)
				}
				return
			}
			der := certificate(t, s)
			opensslVerifies(t, der)
			if alg != signer.RS256 { // TLS signs with RSA-PSS: a TLS server's RSA key is PS256
				handshake(t, s, der)
			}
			if alg != signer.PS256 { // SSH has no RSA-PSS
				sshCertificate(t, s)
			}
			jws(t, s)
		})
	}
}

// mustRaw turns an ECDSA DER signature into r‖s, as the signer contract
// verifies it.
func mustRaw(t *testing.T, s *client.KeySigner, der []byte) []byte {
	t.Helper()
	raw, err := signer.DERToRaw(der, 32)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func certificate(t *testing.T, s *client.KeySigner) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "sigil-signed"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if s.Algorithm() == signer.PS256 {
		tmpl.SignatureAlgorithm = x509.SHA256WithRSAPSS
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil || cert.CheckSignatureFrom(cert) != nil {
		t.Fatalf("the certificate does not verify: %v", err)
	}
	return der
}

func opensslVerifies(t *testing.T, der []byte) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	f := filepath.Join(t.TempDir(), "c.pem")
	os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	if out, err := exec.Command("openssl", "verify", "-CAfile", f, f).CombinedOutput(); err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
}

// handshake runs a TLS server whose certificate key is s and a client
// that trusts it.
func handshake(t *testing.T, s *client.KeySigner, der []byte) {
	t.Helper()
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: s}}})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	cli := tls.Client(b, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := cli.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v (server: %v)", err, <-errc)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func sshCertificate(t *testing.T, s *client.KeySigner) {
	t.Helper()
	ss, err := ssh.NewSignerFromSigner(s)
	if err != nil {
		t.Fatal(err)
	}
	if s.Algorithm() == signer.RS256 {
		if ss, err = ssh.NewSignerWithAlgorithms(ss.(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSASHA256}); err != nil {
			t.Fatal(err)
		}
	}
	cert := &ssh.Certificate{Key: ss.PublicKey(), CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(time.Now().Add(-time.Hour).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, ss); err != nil {
		t.Fatalf("SSH certificate: %v", err)
	}
	checker := &ssh.CertChecker{IsUserAuthority: func(auth ssh.PublicKey) bool { return string(auth.Marshal()) == string(ss.PublicKey().Marshal()) }}
	if err := checker.CheckCert("alice", cert); err != nil {
		t.Fatalf("the SSH certificate does not verify: %v", err)
	}
}

func jws(t *testing.T, s *client.KeySigner) {
	t.Helper()
	alg := jose.SignatureAlgorithm(s.Algorithm())
	js, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: s.Opaque()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := js.Sign([]byte(`{"sub":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	compact, _ := obj.CompactSerialize()
	parsed, err := jose.ParseSignedCompact(compact, []jose.SignatureAlgorithm{alg})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := parsed.Verify(s.Public()); err != nil || string(out) != `{"sub":"alice"}` {
		t.Fatalf("go-jose: %v", err)
	}
}

// A KeySigner is bound to the generation whose public key it holds:
// after a rotation it refuses rather than sign with a key Public is not.
func TestSignerIsPinnedToItsGeneration(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	create(t, c, &sigilv1.CreateKeyRequest{Id: "pinned", Algorithm: "ES256"})
	s, err := c.Signer(ctx, "pinned")
	if err != nil {
		t.Fatal(err)
	}
	digest := signer.ES256.Input([]byte("x"))
	if _, err := s.Sign(nil, digest, crypto.SHA384); err == nil {
		t.Error("a SHA-384 digest was signed by an ES256 key")
	}
	if _, err := s.Sign(nil, digest, &rsa.PSSOptions{Hash: crypto.SHA256}); err == nil {
		t.Error("PSS options were taken by an ECDSA key")
	}
	if _, err := c.Keys.RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: "pinned"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(nil, digest, crypto.SHA256); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("after a rotation: %v", err)
	}
}

// A read or a plain signature answered Unavailable (a backend blip) is
// retried; a transaction is not.
func TestRetriesOnlyWhatIsSafe(t *testing.T) {
	c, e := dial(t)
	ctx := context.Background()
	create(t, c, &sigilv1.CreateKeyRequest{Id: "blip", Algorithm: "ES256"})
	create(t, c, &sigilv1.CreateKeyRequest{Id: "wallet", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})
	s, err := c.Signer(ctx, "blip")
	if err != nil {
		t.Fatal(err)
	}
	e.HSM.Down.Store(true)
	time.AfterFunc(300*time.Millisecond, func() { e.HSM.Down.Store(false) })
	if _, err := s.Sign(nil, signer.ES256.Input([]byte("x")), crypto.SHA256); err != nil {
		t.Fatalf("a signature during a 300 ms blip: %v", err)
	}
	e.HSM.Down.Store(true)
	defer e.HSM.Down.Store(false)
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Nonce: 1, GasTipCap: big.NewInt(1), GasFeeCap: big.NewInt(2), Gas: 21000,
		To: &common.Address{0x35}, Value: big.NewInt(1)})
	start := time.Now()
	if _, err := clienteth.New(c).SignTx(ctx, "wallet", tx, big.NewInt(1)); status.Code(err) != codes.Unavailable || time.Since(start) > 150*time.Millisecond {
		t.Fatalf("a transaction during an outage: %v after %v (want Unavailable at once)", err, time.Since(start))
	}
}

// MintJWT's tokens verify with go-jose against the key's JWK Set; the
// Ethereum helpers return go-ethereum types that recover to the key.
func TestJWTAndEthereumHelpers(t *testing.T) {
	c, e := dial(t)
	ctx := context.Background()
	create(t, c, &sigilv1.CreateKeyRequest{Id: "auth", Algorithm: "ES256", Purpose: "jwt"})
	create(t, c, &sigilv1.CreateKeyRequest{Id: "wallet", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})

	token, err := c.MintJWT(ctx, "auth", map[string]any{"sub": "alice"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	resp, err := http.Get(e.PublicURL + "/keys/auth/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	parsed, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(set.Key(parsed.Signatures[0].Header.KeyID)) != 1 {
		t.Fatalf("token %v, set %v", err, set)
	}
	if _, err := parsed.Verify(set.Key(parsed.Signatures[0].Header.KeyID)[0]); err != nil {
		t.Fatal(err)
	}
	// A batch: each item minted alone; one on a missing key fails alone.
	batch, err := c.MintJWTBatch(ctx, []client.JWTItem{{KeyID: "auth", Claims: map[string]any{"sub": "bob"}}, {KeyID: "missing", Claims: map[string]any{}}, {KeyID: "auth", Claims: map[string]any{"sub": "carol"}, TTL: time.Minute}})
	if err != nil || len(batch) != 3 || batch[1].Err == nil || batch[0].Err != nil || batch[2].Err != nil {
		t.Fatalf("MintJWTBatch: %v %+v", err, batch)
	}
	for i, want := range map[int]string{0: `"sub":"bob"`, 2: `"sub":"carol"`} {
		tok, err := jose.ParseSignedCompact(batch[i].Token, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		claims, err := tok.Verify(set.Key(batch[i].KID)[0])
		if err != nil || !strings.Contains(string(claims), want) {
			t.Errorf("batch item %d: %v %s", i, err, claims)
		}
	}

	addr, err := clienteth.New(c).Address(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Nonce: 7, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(2e9), Gas: 21000,
		To: &common.Address{0x35}, Value: big.NewInt(1e15)})
	signed, err := clienteth.New(c).SignTx(ctx, "wallet", tx, big.NewInt(1))
	if err != nil {
		t.Fatal(err)
	}
	if from, err := types.Sender(types.LatestSignerForChainID(big.NewInt(1)), signed); err != nil || from != addr || signed.Nonce() != 7 {
		t.Fatalf("sender %s (%v), want %s", from, err, addr)
	}
	sig, err := clienteth.New(c).SignMessage(ctx, "wallet", []byte("hello"))
	if err != nil || recovered(t, accounts.TextHash([]byte("hello")), sig) != addr {
		t.Fatalf("message: %v", err)
	}
	var td apitypes.TypedData
	if err := json.Unmarshal([]byte(backendtest.MailTypedData), &td); err != nil {
		t.Fatal(err)
	}
	sig, err = clienteth.New(c).SignTypedData(ctx, "wallet", td)
	hash, _, _ := apitypes.TypedDataAndHash(td)
	if err != nil || recovered(t, hash, sig) != addr {
		t.Fatalf("typed data: %v", err)
	}
}

func recovered(t *testing.T, hash, sig []byte) common.Address {
	t.Helper()
	rs := append([]byte{}, sig...)
	rs[64] -= 27
	pub, err := ethcrypto.SigToPub(hash, rs)
	if err != nil {
		t.Fatal(err)
	}
	return ethcrypto.PubkeyToAddress(*pub)
}

// A held transaction: HeldFor names its approval ID, Approve (with the
// hash the server shows) completes the quorum, ApprovalResult gives the
// signed transaction.
func TestHeldRequestHelpers(t *testing.T) {
	e := servertest.NewMTLS(t, policy+`
  - identity: spiffe://example.org/officer
    keys: ["*"]
    allow: [approvals.approve]
approvals:
  - operation: eth.sign_tx
    keys: ["wallet"]
    approvers: [spiffe://example.org/officer]
    quorum: 1
`)
	app, officer := dialAs(t, e, "spiffe://example.org/app"), dialAs(t, e, "spiffe://example.org/officer")
	ctx := context.Background()
	create(t, app, &sigilv1.CreateKeyRequest{Id: "wallet", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Nonce: 0, To: &common.Address{1}, Value: big.NewInt(1), Gas: 21000, GasFeeCap: big.NewInt(2), GasTipCap: big.NewInt(1)})
	_, err := clienteth.New(app).SignTx(ctx, "wallet", tx, big.NewInt(1))
	id, held := client.HeldFor(err)
	if !held || len(id) != 32 {
		t.Fatalf("SignTx of a held transaction: %v", err)
	}
	if _, held := client.HeldFor(errors.New("other")); held {
		t.Fatal("HeldFor of any error")
	}
	if _, err := app.ApprovalResult(ctx, id); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("the result before approval: %v", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := app.AwaitApprovalResult(waitCtx, id, 20*time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("awaiting a request nobody approves: %v", err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		officer.Approve(ctx, id, "")
	}()
	res, err := app.AwaitApprovalResult(ctx, id, 20*time.Millisecond)
	out, ok := res.(*sigilv1.SignTransactionResponse)
	if err != nil || !ok {
		t.Fatalf("ApprovalResult: %T %v", res, err)
	}
	signed := new(types.Transaction)
	if err := signed.UnmarshalBinary(out.GetRawTransaction()); err != nil || signed.Nonce() != 0 || signed.Value().Int64() != 1 {
		t.Fatalf("the approved transaction: %v", err)
	}
}

// A batch is split by bytes as well as by items: a thousand tokens with
// claims of a few hundred bytes each fit no single request (the server
// takes 256 KiB), and every one is minted.
func TestMintJWTBatchSplitsByBytes(t *testing.T) {
	c, _ := dial(t)
	create(t, c, &sigilv1.CreateKeyRequest{Id: "auth", Algorithm: "ES256", Purpose: "jwt"})
	items := make([]client.JWTItem, 1000)
	for i := range items {
		items[i] = client.JWTItem{KeyID: "auth", Claims: map[string]any{"sub": fmt.Sprintf("user-%d", i), "scope": strings.Repeat("read:things ", 25)}}
	}
	out, err := c.MintJWTBatch(context.Background(), items)
	if err != nil || len(out) != len(items) {
		t.Fatalf("%d of %d minted: %v", len(out), len(items), err)
	}
	for i, r := range out {
		if r.Err != nil || r.Token == "" {
			t.Fatalf("item %d: %v", i, r.Err)
		}
	}
}
