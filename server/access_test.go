package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/server/servertest"
)

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
  - identity: spiffe://example.org/tenant-a/admin
    keys: ["tenant-a-*"]
    allow: [keys.admin, keys.read, jwks.admin]
  - identity: spiffe://example.org/all/*
    keys: ["*"]
    allow: [sign.raw, sign.jwt, eth.sign_tx, eth.sign_message, eth.sign_typed_data, keys.read, keys.admin, jwks.admin]
`

// mtlsEnv is a server with mTLS, testPolicy and an audit log.
type mtlsEnv struct{ *servertest.MTLS }

func newMTLSEnv(t testing.TB, opts ...func(*server.Options)) *mtlsEnv {
	return &mtlsEnv{servertest.NewMTLS(t, testPolicy, opts...)}
}

// call runs the RPC of one operation on key id and returns its error.
func call(conn *grpc.ClientConn, op authz.Op, id string) error {
	ctx := context.Background()
	d := make([]byte, 32)
	var err error
	switch op {
	case raw.OpSign:
		_, err = sigilv1.NewSigningServiceClient(conn).Sign(ctx, &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: d}})
	case jwt.OpSign:
		_, err = sigilv1.NewJWTServiceClient(conn).SignJWT(ctx, &sigilv1.SignJWTRequest{KeyId: id, ClaimsJson: []byte(`{"sub":"x"}`)})
	case eth.OpSignTx:
		_, err = sigilv1.NewEthereumServiceClient(conn).SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: id, Transaction: &sigilv1.SignTransactionRequest_TransactionJson{
			TransactionJson: []byte(`{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x1","gas":"0x5208","gasPrice":"0x1"}`)}})
	case eth.OpSignMessage:
		_, err = sigilv1.NewEthereumServiceClient(conn).SignMessage(ctx, &sigilv1.SignMessageRequest{KeyId: id, Message: []byte("m")})
	case eth.OpSignTypedData:
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
	ops := e.Client(t, "spiffe://example.org/ops")
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
		clients[id] = e.Client(t, id)
	}
	// What each operation is tried on, and who may do it there.
	cases := []struct {
		op      authz.Op
		key     string
		allowed map[string]bool
	}{
		{jwt.OpSign, "auth-jwt", map[string]bool{"spiffe://example.org/auth-server": true}},
		{raw.OpSign, "raw-1", map[string]bool{"spiffe://example.org/raw-signer": true}},
		{eth.OpSignTx, "treasury-1", map[string]bool{"treasury.internal": true}},
		{eth.OpSignMessage, "treasury-1", map[string]bool{"treasury.internal": true}},
		{eth.OpSignTypedData, "treasury-1", map[string]bool{"treasury.internal": true}},
		{authz.KeysRead, "auth-jwt", map[string]bool{"spiffe://example.org/auth-server": true, "spiffe://example.org/ops": true}},
		{authz.KeysRead, "treasury-1", map[string]bool{"spiffe://example.org/ops": true}},
		{authz.KeysAdmin, "auth-jwt", map[string]bool{"spiffe://example.org/ops": true}},
		// A jwt signer cannot raw-sign its own key, nor use another's.
		{raw.OpSign, "auth-jwt", map[string]bool{}},
		{jwt.OpSign, "treasury-1", map[string]bool{}},
		// Denial gives no hint whether a key exists.
		{jwt.OpSign, "auth-missing", map[string]bool{"spiffe://example.org/auth-server": true}},
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
	if err := call(clients["spiffe://example.org/auth-server"], jwt.OpSign, "auth-missing"); status.Code(err) != codes.NotFound {
		t.Errorf("an allowed client asking for a missing key: %v", err)
	}
	// Listing shows only the keys one may read.
	list, err := sigilv1.NewKeyServiceClient(clients["spiffe://example.org/auth-server"]).ListKeys(context.Background(), &sigilv1.ListKeysRequest{})
	if err != nil || len(list.GetKeys()) != 1 || list.GetKeys()[0].GetId() != "auth-jwt" {
		t.Fatalf("listing: %v %v", list, err)
	}
	// Every decision is in the audit log, whose chain verifies (this
	// server signs no checkpoints: it has no audit key).
	r, err := audit.Verify([]string{e.AuditLog}, nil, nil)
	if err != nil || r.Records < len(cases)*len(clients) || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "no checkpoint") {
		t.Fatalf("audit: %d records, %v %v", r.Records, r.Problems, err)
	}
	log, _ := os.ReadFile(e.AuditLog)
	if !strings.Contains(string(log), `"identity":"dns:treasury.internal","operation":"eth.sign_message","method":"/sigil.v1.EthereumService/SignMessage","key_id":"treasury-1"`) {
		t.Error("an allowed request does not name the identity the rule allowed")
	}
	if !strings.Contains(string(log), `"identities":["dns:treasury.internal","cn:cn-treasury.internal"],"operation":"sign.jwt","method":"/sigil.v1.JWTService/SignJWT","key_id":"auth-jwt","outcome":"denied","code":"PermissionDenied"`) {
		t.Error("a denial is missing from the audit log")
	}
}

func TestHandshakeRefusesForeignExpiredAndMissingCertificates(t *testing.T) {
	e := newMTLSEnv(t)
	foreign := servertest.NewCA(t).Issue(t, "spiffe://example.org/ops", false, time.Now().Add(time.Hour))
	expired := e.CA.Issue(t, "spiffe://example.org/ops", false, time.Now().Add(-time.Minute))
	for name, conn := range map[string]*grpc.ClientConn{
		"foreign CA": e.DialAs(t, e.CA, &foreign),
		"expired":    e.DialAs(t, e.CA, &expired),
		"none":       e.DialAs(t, e.CA, nil),
	} {
		if err := call(conn, authz.KeysRead, "x"); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v", name, err)
		}
	}
	insecure := e.Server.Conn // plaintext against a TLS listener
	if _, err := sigilv1.NewKeyServiceClient(insecure).ListKeys(context.Background(), &sigilv1.ListKeysRequest{}); err == nil {
		t.Error("a plaintext client got an answer")
	}
}

func TestPolicyReload(t *testing.T) {
	e := newMTLSEnv(t)
	if _, err := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops")).CreateKey(context.Background(),
		&sigilv1.CreateKeyRequest{Id: "raw-2", Algorithm: "EdDSA"}); err != nil {
		t.Fatal(err)
	}
	newcomer := e.Client(t, "spiffe://example.org/newcomer")
	if status.Code(call(newcomer, authz.KeysRead, "raw-2")) != codes.PermissionDenied {
		t.Fatal("newcomer allowed before the reload")
	}
	file := filepath.Join(filepath.Dir(e.AuditLog), "policy.yaml")
	os.WriteFile(file, []byte(testPolicy+"  - identity: spiffe://example.org/newcomer\n    keys: [\"raw-*\"]\n    allow: [keys.read]\n"), 0o600)
	if err := e.Authz.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := call(newcomer, authz.KeysRead, "raw-2"); err != nil {
		t.Fatalf("after the reload: %v", err)
	}
	// A bad policy is refused, naming its line, and the old one stays.
	os.WriteFile(file, []byte("rules:\n  - identity: x\n    keys: [\"*\"]\n    allow: [sign.everything]\n"), 0o600)
	if err := e.Authz.Reload(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad policy: %v", err)
	}
	if err := call(newcomer, authz.KeysRead, "raw-2"); err != nil {
		t.Fatalf("the old policy did not stay: %v", err)
	}
}
