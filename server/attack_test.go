package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// The attack suite: hostile inputs a tenant holding a certificate from the
// deployment's own CA could send, each with the code it must get, against
// a real server (mTLS on loopback, SoftHSM keys, the audit log). After
// every row the server must still answer its health check SERVING and the
// process must not have grown past rssBound. New RPCs add rows here.

const (
	admin    = "spiffe://example.org/ops"
	treasury = "treasury.internal"
	rssBound = 200 << 20
)

// p256SPKI is a P-256 public key, SubjectPublicKeyInfo DER.
var p256SPKI = func() []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return b
}()

func importParams(req *sigilv1.GetImportParametersRequest) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewKeyServiceClient(c).GetImportParameters(ctx, req)
		return err
	}
}

// rawCodec sends a request's bytes as they are, so that a test can send
// what no generated client would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// invokeRaw calls method with msg as the request's wire bytes.
func invokeRaw(ctx context.Context, conn *grpc.ClientConn, method string, msg []byte) error {
	var out []byte
	return conn.Invoke(ctx, method, msg, &out, grpc.ForceCodec(rawCodec{}))
}

// attackEnv is the suite's server, its keys and its clients.
type attackEnv struct {
	*mtlsEnv
	admin  *grpc.ClientConn
	tenant *grpc.ClientConn // allowed every operation on every key
}

func newAttackEnv(t testing.TB) *attackEnv {
	e := &attackEnv{mtlsEnv: newMTLSEnv(t)}
	e.admin, e.tenant = e.Client(t, admin), e.Client(t, "spiffe://example.org/all/tenant")
	for _, k := range []*sigilv1.CreateKeyRequest{
		{Id: "auth-jwt", Algorithm: "ES256", Purpose: "jwt"},
		{Id: "raw-1", Algorithm: "ES256", Purpose: "raw"},
		{Id: "treasury-1", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}},
	} {
		if _, err := sigilv1.NewKeyServiceClient(e.admin).CreateKey(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// certWith dials with a certificate from the deployment's CA made from tmpl.
func (e *attackEnv) certWith(t testing.TB, tmpl *x509.Certificate) *grpc.ClientConn {
	cert := e.CA.Mint(t, tmpl)
	return e.DialAs(t, e.CA, &cert)
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// An attack is one row: what is sent, as whom, and the code it must get.
type attack struct {
	name string
	as   func(*testing.T, *attackEnv) *grpc.ClientConn // the tenant allowed everything if nil
	call func(context.Context, *grpc.ClientConn) error
	want codes.Code
}

func createKey(ctx context.Context, c *grpc.ClientConn) error {
	_, err := sigilv1.NewKeyServiceClient(c).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "stolen-" + strconv.FormatInt(time.Now().UnixNano(), 36), Algorithm: "ES256"})
	return err
}

func listKeys(ctx context.Context, c *grpc.ClientConn) error {
	_, err := sigilv1.NewKeyServiceClient(c).ListKeys(ctx, &sigilv1.ListKeysRequest{})
	return err
}

func verifyRaw(req *sigilv1.VerifyRequest) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewSigningServiceClient(c).Verify(ctx, req)
		return err
	}
}

func auditHead(ctx context.Context, c *grpc.ClientConn) error {
	_, err := sigilv1.NewAuditServiceClient(c).GetAuditHead(ctx, &sigilv1.GetAuditHeadRequest{})
	return err
}

func signMessage(ctx context.Context, c *grpc.ClientConn) error {
	_, err := sigilv1.NewEthereumServiceClient(c).SignMessage(ctx, &sigilv1.SignMessageRequest{KeyId: "treasury-1", Message: []byte("m")})
	return err
}

func signRaw(req *sigilv1.SignRequest) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewSigningServiceClient(c).Sign(ctx, req)
		return err
	}
}

func signJWT(claims, headers string) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewJWTServiceClient(c).SignJWT(ctx, &sigilv1.SignJWTRequest{KeyId: "auth-jwt", ClaimsJson: []byte(claims), HeadersJson: []byte(headers)})
		return err
	}
}

func signTxJSON(tx string) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewEthereumServiceClient(c).SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "treasury-1",
			Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(tx)}})
		return err
	}
}

func signTxRLP(b []byte) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewEthereumServiceClient(c).SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "treasury-1",
			Transaction: &sigilv1.SignTransactionRequest_UnsignedRlp{UnsignedRlp: b}})
		return err
	}
}

func signTyped(doc string) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewEthereumServiceClient(c).SignTypedData(ctx, &sigilv1.SignTypedDataRequest{KeyId: "treasury-1", TypedDataJson: []byte(doc)})
		return err
	}
}

func approve(id string) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewApprovalServiceClient(c).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: strings.Repeat("0", 64)})
		return err
	}
}

func rawCall(method string, msg []byte) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error { return invokeRaw(ctx, c, method, msg) }
}

// legacyRLP is an unsigned EIP-155 legacy transaction on chain 1.
func legacyRLP(gasPrice, value *big.Int) []byte {
	b, _ := rlp.EncodeToBytes([]any{uint64(0), gasPrice, uint64(21000), common.HexToAddress("0x3535353535353535353535353535353535353535"), value, []byte{}, big.NewInt(1), uint(0), uint(0)})
	return b
}

func nestedRLP(depth int) []byte {
	b := rlp.RawValue{0xc0}
	for range depth {
		b, _ = rlp.EncodeToBytes([]rlp.RawValue{b})
	}
	return b
}

// typedDoc is a one-field EIP-712 document: field a of type typ holds value.
func typedDoc(typ, primary, value string) string {
	return `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"chainId","type":"uint256"}],"M":[{"name":"a","type":"` + typ +
		`"}]},"primaryType":"` + primary + `","domain":{"name":"d","chainId":1},"message":{"a":` + value + `}}`
}

const txOK = `{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x1","gas":"0x5208","gasPrice":"0x1"}`

func attacks() []attack {
	big256, big312, one := new(big.Int).Lsh(big.NewInt(1), 256), new(big.Int).Lsh(big.NewInt(1), 312), big.NewInt(1)
	signReq, _ := proto.Marshal(&sigilv1.SignRequest{KeyId: "raw-1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
	asCert := func(tmpl func() *x509.Certificate) func(*testing.T, *attackEnv) *grpc.ClientConn {
		return func(t *testing.T, e *attackEnv) *grpc.ClientConn { return e.certWith(t, tmpl()) }
	}
	cnSpoofer := asCert(func() *x509.Certificate { return &x509.Certificate{Subject: pkix.Name{CommonName: admin}} })
	dnsSpoofer := asCert(func() *x509.Certificate { return &x509.Certificate{DNSNames: []string{admin}} })
	rows := []attack{
		// Identities: no certificate passes for another.
		{"the admin itself", func(_ *testing.T, e *attackEnv) *grpc.ClientConn { return e.admin }, createKey, codes.OK},
		{"CN is the admin's SPIFFE ID: create", cnSpoofer, createKey, codes.PermissionDenied},
		{"CN is the admin's SPIFFE ID: list", cnSpoofer, listKeys, codes.PermissionDenied},
		{"DNS SAN is the admin's SPIFFE ID: create", dnsSpoofer, createKey, codes.PermissionDenied},
		{"DNS SAN is the admin's SPIFFE ID: list", dnsSpoofer, listKeys, codes.PermissionDenied},
		{"CN is the treasury's DNS name", asCert(func() *x509.Certificate { return &x509.Certificate{Subject: pkix.Name{CommonName: treasury}} }), signMessage, codes.PermissionDenied},
		{"URI SAN dns:treasury.internal", asCert(func() *x509.Certificate { return &x509.Certificate{URIs: []*url.URL{mustURL("dns:" + treasury)}} }), signMessage, codes.PermissionDenied},
		{"URI SAN with a dot-dot path", asCert(func() *x509.Certificate {
			return &x509.Certificate{URIs: []*url.URL{mustURL("spiffe://example.org/all/../ops")}}
		}), createKey, codes.PermissionDenied},
		{"SPIFFE ID of another trust domain", asCert(func() *x509.Certificate {
			return &x509.Certificate{URIs: []*url.URL{mustURL("spiffe://example.org.evil/ops")}}
		}), createKey, codes.PermissionDenied},
		{"expired certificate", asCert(func() *x509.Certificate {
			return &x509.Certificate{URIs: []*url.URL{mustURL(admin)}, NotAfter: time.Now().Add(-time.Minute)}
		}), listKeys, codes.Unavailable},
		{"certificate not yet valid", asCert(func() *x509.Certificate {
			return &x509.Certificate{URIs: []*url.URL{mustURL(admin)}, NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)}
		}), listKeys, codes.Unavailable},
		{"server certificate as a client", asCert(func() *x509.Certificate {
			return &x509.Certificate{URIs: []*url.URL{mustURL(admin)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		}), listKeys, codes.Unavailable},
		{"certificate of a foreign CA", func(t *testing.T, e *attackEnv) *grpc.ClientConn {
			cert := servertest.NewCA(t).Issue(t, admin, false, time.Now().Add(time.Hour))
			return e.DialAs(t, e.CA, &cert)
		}, listKeys, codes.Unavailable},
		{"no certificate", func(t *testing.T, e *attackEnv) *grpc.ClientConn { return e.DialAs(t, e.CA, nil) }, listKeys, codes.Unavailable},

		// Edges: what is not named is shut, what does not decode is refused.
		{"method no service has", nil, rawCall("/sigil.v1.KeyService/DeleteEverything", nil), codes.PermissionDenied},
		{"method spelt in lower case", nil, rawCall("/sigil.v1.keyservice/GetKey", nil), codes.PermissionDenied},
		{"service no one serves", nil, rawCall("/sigil.v1.Nope/X", nil), codes.PermissionDenied},
		{"request that does not decode", nil, rawCall(sigilv1.SigningService_Sign_FullMethodName, []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}), codes.InvalidArgument},
		{"key ID not UTF-8", nil, rawCall(sigilv1.SigningService_Sign_FullMethodName, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "raw-\xff")), codes.InvalidArgument},
		{"unknown field", nil, rawCall(sigilv1.SigningService_Sign_FullMethodName, protowire.AppendVarint(protowire.AppendTag(slices.Clone(signReq), 99, protowire.VarintType), 1)), codes.InvalidArgument},
		{"format 99", nil, signRaw(&sigilv1.SignRequest{KeyId: "raw-1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}, Format: 99}), codes.InvalidArgument},
		{"format -1", nil, signRaw(&sigilv1.SignRequest{KeyId: "raw-1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}, Format: -1}), codes.InvalidArgument},
		{"oversized key ID", nil, signRaw(&sigilv1.SignRequest{KeyId: strings.Repeat("k", 200<<10), Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}}), codes.InvalidArgument},
		{"empty key ID", nil, signRaw(&sigilv1.SignRequest{Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}}), codes.InvalidArgument},
		{"request over the size limit", nil, signRaw(&sigilv1.SignRequest{KeyId: "raw-1", Input: &sigilv1.SignRequest_Message{Message: make([]byte, server.MaxRequestBytes+1)}}), codes.ResourceExhausted},
		{"message over its limit", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewEthereumServiceClient(c).SignMessage(ctx, &sigilv1.SignMessageRequest{KeyId: "treasury-1", Message: make([]byte, 65<<10)})
			return err
		}, codes.InvalidArgument},

		// Transactions.
		{"legacy RLP, value 2^256", nil, signTxRLP(legacyRLP(one, big256)), codes.InvalidArgument},
		{"legacy RLP, gasPrice 2^312", nil, signTxRLP(legacyRLP(big312, one)), codes.InvalidArgument},
		{"RLP bomb: nested lists", nil, signTxRLP(nestedRLP(20000)), codes.InvalidArgument},
		{"RLP bomb: a length past the end", nil, signTxRLP([]byte{0xfb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), codes.InvalidArgument},
		{"transaction JSON, duplicate member", nil, signTxJSON(strings.Replace(txOK, `{`, `{"value":"0x0",`, 1)), codes.InvalidArgument},
		{"transaction JSON, escaped duplicate", nil, signTxJSON(strings.Replace(txOK, `{`, `{"v\u0061lue":"0x0",`, 1)), codes.InvalidArgument},
		{"transaction JSON, nesting bomb", nil, signTxJSON(strings.Replace(txOK, `"0x1",`, `"0x1","accessList":`+strings.Repeat("[", 50000)+strings.Repeat("]", 50000)+`,`, 1)), codes.InvalidArgument},
		{"transaction JSON, invalid UTF-8", nil, signTxJSON(strings.Replace(txOK, `"0x1",`, "\"0x1\xff\",", 1)), codes.InvalidArgument},

		// JWTs.
		{"claims with invalid UTF-8", nil, signJWT("{\"sub\":\"ad\xffmin\"}", ""), codes.InvalidArgument},
		{"claims with a lone surrogate", nil, signJWT(`{"sub":"ad\ud800min"}`, ""), codes.InvalidArgument},
		{"claims with an escaped duplicate", nil, signJWT(`{"sub":"a","s\u0075b":"admin"}`, ""), codes.InvalidArgument},
		{"claims nesting bomb", nil, signJWT(`{"a":`+strings.Repeat("[", 8000)+strings.Repeat("]", 8000)+`}`, ""), codes.InvalidArgument},
		{"claims over their limit", nil, signJWT(`{"a":"`+strings.Repeat("x", 17<<10)+`"}`, ""), codes.InvalidArgument},
		{"header with invalid UTF-8", nil, signJWT(`{}`, "{\"cty\":\"\xc3\"}"), codes.InvalidArgument},
		{"ttl out of range", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewJWTServiceClient(c).SignJWT(ctx, &sigilv1.SignJWTRequest{KeyId: "auth-jwt", ClaimsJson: []byte(`{}`), Ttl: &durationpb.Duration{Seconds: 1, Nanos: -5}})
			return err
		}, codes.InvalidArgument},

		// The audit trail's head and Sigil's own keys.
		{"audit head, CN spoofing the admin", cnSpoofer, auditHead, codes.PermissionDenied},
		{"audit head, unknown field", nil, rawCall(sigilv1.AuditService_GetAuditHead_FullMethodName, protowire.AppendVarint(protowire.AppendTag(nil, 7, protowire.VarintType), 1)), codes.InvalidArgument},
		{"audit head, bytes that do not decode", nil, rawCall(sigilv1.AuditService_GetAuditHead_FullMethodName, []byte{0x0a, 0xff}), codes.InvalidArgument},
		{"verify, CN spoofing the admin", cnSpoofer, verifyRaw(&sigilv1.VerifyRequest{KeyId: "raw-1", Input: &sigilv1.VerifyRequest_Digest{Digest: make([]byte, 32)}, Signature: []byte{1}}), codes.PermissionDenied},
		{"verify, signature over its limit", nil, verifyRaw(&sigilv1.VerifyRequest{KeyId: "raw-1", Input: &sigilv1.VerifyRequest_Digest{Digest: make([]byte, 32)}, Signature: make([]byte, 2048)}), codes.InvalidArgument},
		{"verify, generation and kid both named", nil, verifyRaw(&sigilv1.VerifyRequest{KeyId: "raw-1", Input: &sigilv1.VerifyRequest_Digest{Digest: make([]byte, 32)}, Signature: []byte{1}, Generation: 1, Kid: "k"}), codes.InvalidArgument},
		{"verify, negative generation", nil, verifyRaw(&sigilv1.VerifyRequest{KeyId: "raw-1", Input: &sigilv1.VerifyRequest_Digest{Digest: make([]byte, 32)}, Signature: []byte{1}, Generation: -1}), codes.InvalidArgument},
		{"disable a key, CN spoofing the admin", cnSpoofer, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).DisableKey(ctx, &sigilv1.DisableKeyRequest{Id: "raw-1"})
			return err
		}, codes.PermissionDenied},
		{"enable a key with an impossible ID", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).EnableKey(ctx, &sigilv1.EnableKeyRequest{Id: "../raw-1"})
			return err
		}, codes.InvalidArgument},
		{"create a key in Sigil's reserved namespace", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "sigil.audit2", Algorithm: "ES256"})
			return err
		}, codes.InvalidArgument},
		// Purposes and their policies.
		{"create a key of Sigil's own audit purpose", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Purpose: "audit"}), codes.InvalidArgument},
		{"create a key of a purpose no one registered", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Purpose: "ssh"}), codes.InvalidArgument},
		{"create a raw key with a rotation policy", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Purpose: "raw", JwtPolicy: &sigilv1.JWTPolicy{}}), codes.InvalidArgument},
		{"create a jwt key with a spending policy", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Purpose: "jwt", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}}), codes.InvalidArgument},
		{"create with a policy Any no purpose takes", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Purpose: "raw",
			Policy: &anypb.Any{TypeUrl: "type.googleapis.com/evil.Policy", Value: []byte{0xff}}}), codes.InvalidArgument},
		{"update a policy with two policies", nil, updatePolicy(&sigilv1.UpdateKeyPolicyRequest{Id: "auth-jwt", JwtPolicy: &sigilv1.JWTPolicy{}, EthPolicy: &sigilv1.EthPolicy{}}), codes.InvalidArgument},
		{"update a policy with none", nil, updatePolicy(&sigilv1.UpdateKeyPolicyRequest{Id: "auth-jwt"}), codes.InvalidArgument},
		{"update a jwt key with a spending policy", nil, updatePolicy(&sigilv1.UpdateKeyPolicyRequest{Id: "auth-jwt", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}}), codes.FailedPrecondition},
		{"update a jwt key with a policy Any no purpose takes beside its own", nil, updatePolicy(&sigilv1.UpdateKeyPolicyRequest{Id: "auth-jwt", JwtPolicy: &sigilv1.JWTPolicy{},
			Policy: &anypb.Any{TypeUrl: "type.googleapis.com/sigil.v2.EthPolicyExtra", Value: []byte{8, 1}}}), codes.InvalidArgument},
		{"create with its own policy and an Any no purpose takes", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{},
			Policy: &anypb.Any{TypeUrl: "type.googleapis.com/sigil.v2.EthPolicyExtra", Value: []byte{8, 1}}}), codes.InvalidArgument},
		{"create an RSA key of an odd size", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "RS256", RsaBits: 4096}), codes.InvalidArgument},
		{"create a jwt key whose schedule overflows", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{
			RotateEvery: &durationpb.Duration{Seconds: 315576000000}, PublishAhead: &durationpb.Duration{Seconds: 315576000000}, Skew: &durationpb.Duration{Seconds: 1 << 62}}}), codes.InvalidArgument},
		// Batches: each item is a Sign of its own; the batch is bounded.
		{"a batch of 1001 items", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewSigningServiceClient(c).SignBatch(ctx, &sigilv1.SignBatchRequest{Items: make([]*sigilv1.SignRequest, 1001)})
			return err
		}, codes.InvalidArgument},
		{"a batch, CN spoofing the admin", cnSpoofer, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewSigningServiceClient(c).SignBatch(ctx, &sigilv1.SignBatchRequest{Items: []*sigilv1.SignRequest{{KeyId: "raw-1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}}}})
			return err
		}, codes.PermissionDenied},
		// Bringing one's own key.
		{"import parameters, CN spoofing the admin", cnSpoofer, importParams(&sigilv1.GetImportParametersRequest{Id: "mine", Algorithm: "ES256"}), codes.PermissionDenied},
		{"import parameters for Sigil's own key", nil, importParams(&sigilv1.GetImportParametersRequest{Id: "sigil.audit", Algorithm: "ES256"}), codes.InvalidArgument},
		{"import parameters for an algorithm no one knows", nil, importParams(&sigilv1.GetImportParametersRequest{Id: "mine", Algorithm: "ES512"}), codes.InvalidArgument},
		{"import parameters in a backend no one configured", nil, importParams(&sigilv1.GetImportParametersRequest{Id: "mine", Algorithm: "ES256", Backend: "nope"}), codes.FailedPrecondition},
		{"import without parameters", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Imported: &sigilv1.ImportedKey{WrappedKey: make([]byte, 500), ImportToken: "t", PublicKey: p256SPKI}}), codes.FailedPrecondition},
		{"import of a wrapped key over its limit", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Imported: &sigilv1.ImportedKey{WrappedKey: make([]byte, 17<<10), ImportToken: "t", PublicKey: p256SPKI}}), codes.InvalidArgument},
		{"import with a public key that does not decode", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Imported: &sigilv1.ImportedKey{WrappedKey: make([]byte, 500), ImportToken: "t", PublicKey: []byte{0x30, 0x03, 0x02, 0x01}}}), codes.InvalidArgument},
		{"import and adopt at once", nil, createWith(&sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", AdoptUri: "pkcs11:object=x", Imported: &sigilv1.ImportedKey{WrappedKey: make([]byte, 500), ImportToken: "t", PublicKey: p256SPKI}}), codes.InvalidArgument},
		// Deletion and inventory.
		{"schedule a deletion, CN spoofing the admin", cnSpoofer, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).ScheduleKeyDeletion(ctx, &sigilv1.ScheduleKeyDeletionRequest{Id: "raw-1", Window: durationpb.New(7 * 24 * time.Hour)})
			return err
		}, codes.PermissionDenied},
		{"schedule a deletion a day away", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).ScheduleKeyDeletion(ctx, &sigilv1.ScheduleKeyDeletionRequest{Id: "raw-1", Window: durationpb.New(24 * time.Hour)})
			return err
		}, codes.InvalidArgument},
		{"remove a million labels", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).UpdateKeyMetadata(ctx, &sigilv1.UpdateKeyMetadataRequest{Id: "raw-1", RemoveLabels: slices.Repeat([]string{"x"}, 20000)})
			return err
		}, codes.InvalidArgument},
		{"a label key with a newline", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).UpdateKeyMetadata(ctx, &sigilv1.UpdateKeyMetadataRequest{Id: "raw-1", SetLabels: map[string]string{"a\nb": "x"}})
			return err
		}, codes.InvalidArgument},
		{"list by a label filter that is no label", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).ListKeys(ctx, &sigilv1.ListKeysRequest{Labels: []string{"=x"}})
			return err
		}, codes.InvalidArgument},
		{"list with a page size over its limit", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).ListKeys(ctx, &sigilv1.ListKeysRequest{PageSize: 1 << 30})
			return err
		}, codes.InvalidArgument},
		{"list with a forged page token", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).ListKeys(ctx, &sigilv1.ListKeysRequest{PageToken: strings.Repeat("A", 4096)})
			return err
		}, codes.InvalidArgument},
		{"create with a request ID over its limit", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "req-too-long", Algorithm: "ES256", RequestId: strings.Repeat("r", 129)})
			return err
		}, codes.InvalidArgument},
		{"cancel a deletion, CN spoofing the admin", cnSpoofer, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).CancelKeyDeletion(ctx, &sigilv1.CancelKeyDeletionRequest{Id: "raw-1"})
			return err
		}, codes.PermissionDenied},
		{"cancel a deletion of an impossible ID", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).CancelKeyDeletion(ctx, &sigilv1.CancelKeyDeletionRequest{Id: strings.Repeat("k", 300)})
			return err
		}, codes.InvalidArgument},
		{"sign with a negative generation", nil, signRaw(&sigilv1.SignRequest{KeyId: "raw-1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}, Generation: -1}), codes.InvalidArgument},
		{"sign with a generation that is not active", nil, signRaw(&sigilv1.SignRequest{KeyId: "raw-1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}, Generation: 1 << 30}), codes.FailedPrecondition},
		// JWK Sets: creating one is jwks.admin's, which keys.admin is not.
		{"create a JWK Set as jwks.admin", nil, createSet(&sigilv1.CreateJWKSetRequest{Name: "issuer-ok"}), codes.OK},
		{"create a JWK Set with keys.admin only", func(_ *testing.T, e *attackEnv) *grpc.ClientConn { return e.admin }, createSet(&sigilv1.CreateJWKSetRequest{Name: "issuer-x"}), codes.PermissionDenied},
		{"create a JWK Set, CN spoofing the tenant", asCert(func() *x509.Certificate {
			return &x509.Certificate{Subject: pkix.Name{CommonName: "spiffe://example.org/all/tenant"}}
		}),
			createSet(&sigilv1.CreateJWKSetRequest{Name: "issuer-x"}), codes.PermissionDenied},
		{"create a JWK Set whose name climbs out of /jwks", nil, createSet(&sigilv1.CreateJWKSetRequest{Name: "../keys"}), codes.InvalidArgument},
		{"create a JWK Set with an oversized name", nil, createSet(&sigilv1.CreateJWKSetRequest{Name: strings.Repeat("n", 200<<10)}), codes.InvalidArgument},
		{"create a JWK Set with a malformed pattern", nil, createSet(&sigilv1.CreateJWKSetRequest{Name: "issuer-x", KeyPatterns: []string{"[x"}}), codes.InvalidArgument},
		{"create a JWK Set with a thousand patterns", nil, createSet(&sigilv1.CreateJWKSetRequest{Name: "issuer-x", KeyPatterns: slices.Repeat([]string{"a*"}, 1000)}), codes.InvalidArgument},
		{"take over the default JWK Set", nil, createSet(&sigilv1.CreateJWKSetRequest{Name: "default", AllowEs256K: true, KeyPatterns: []string{"*"}}), codes.AlreadyExists},
		{"create a key of purpose audit", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewKeyServiceClient(c).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "mine", Algorithm: "ES256", Purpose: "audit"})
			return err
		}, codes.InvalidArgument},

		// Dual control: approval IDs are checked before any lookup; a
		// request held is only its parties' (TestApprovalAttacks).
		{"approve an unknown request", nil, approve("0123456789abcdef0123456789abcdef"), codes.NotFound},
		{"approve with an ID that climbs out of the approvals", nil, approve("../keys/raw-1"), codes.InvalidArgument},
		{"approve with an oversized ID", nil, approve(strings.Repeat("a", 200<<10)), codes.InvalidArgument},
		{"approve with an upper-case ID", nil, approve("0123456789ABCDEF0123456789ABCDEF"), codes.InvalidArgument},
		{"approval request that does not decode", nil, rawCall(sigilv1.ApprovalService_Approve_FullMethodName, []byte{0x0a, 0xff}), codes.InvalidArgument},
		{"deny with a reason over its limit", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewApprovalServiceClient(c).Deny(ctx, &sigilv1.DenyRequest{ApprovalId: "0123456789abcdef0123456789abcdef", Reason: strings.Repeat("r", 4096)})
			return err
		}, codes.InvalidArgument},
		{"list approvals in a state that is none", nil, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewApprovalServiceClient(c).ListApprovals(ctx, &sigilv1.ListApprovalsRequest{State: strings.Repeat("x", 100<<10)})
			return err
		}, codes.InvalidArgument},
		{"result of a request, CN spoofing the admin (no rule names it)", cnSpoofer, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewApprovalServiceClient(c).GetApprovalResult(ctx, &sigilv1.GetApprovalResultRequest{ApprovalId: "0123456789abcdef0123456789abcdef"})
			return err
		}, codes.PermissionDenied},
		{"list approvals with a certificate no rule names", asCert(func() *x509.Certificate {
			return &x509.Certificate{URIs: []*url.URL{mustURL("spiffe://example.org/nobody")}}
		}), func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := sigilv1.NewApprovalServiceClient(c).ListApprovals(ctx, &sigilv1.ListApprovalsRequest{})
			return err
		}, codes.PermissionDenied},

		// Typed data.
		{"typed data, undefined primaryType", nil, signTyped(typedDoc("string", "Nothing", `"b"`)), codes.InvalidArgument},
		{"typed data, int8 = -129", nil, signTyped(typedDoc("int8", "M", `-129`)), codes.InvalidArgument},
		{"typed data, uint8[4294967295]", nil, signTyped(typedDoc("uint8[4294967295]", "M", `[1]`)), codes.InvalidArgument},
		{"typed data, null array element", nil, signTyped(typedDoc("uint8[]", "M", `[null]`)), codes.InvalidArgument},
		{"typed data, undeclared nesting", nil, signTyped(typedDoc("uint8[]", "M", `[[1,2]]`)), codes.InvalidArgument},
		{"typed data, duplicate member", nil, signTyped(strings.Replace(typedDoc("string", "M", `"b"`), `{"a":"b"}`, `{"a":"b","a":"c"}`, 1)), codes.InvalidArgument},
		{"typed data, string not UTF-8", nil, signTyped(typedDoc("string", "M", "\"ad\xffmin\"")), codes.InvalidArgument},
		{"typed data, nesting bomb", nil, signTyped(typedDoc("string", "M", strings.Repeat("[", 20000)+strings.Repeat("]", 20000))), codes.InvalidArgument},
		{"typed data, too many elements", nil, signTyped(typedDoc("uint8[]", "M", "["+strings.Repeat("1,", 2000)+"1]")), codes.InvalidArgument},
		{"typed data, type name that corrupts the encoding", nil, signTyped(strings.Replace(typedDoc("string", "M", `"b"`), `"M"`, `"M(string a)X"`, 2)), codes.InvalidArgument},
	}
	for _, h := range []string{"alg", "kid", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64", "zip", "enc", "JKU", "Jwk", "X5U", "CRIT", "ALG", "Kid"} {
		rows = append(rows, attack{"header override: " + h, nil, signJWT(`{}`, `{"`+h+`":"x"}`), codes.InvalidArgument})
	}
	rows = append(rows,
		attack{"header typ not a string", nil, signJWT(`{}`, `{"typ":123}`), codes.InvalidArgument},
		attack{"typed data, primaryType twice but for case", nil, signTyped(strings.Replace(typedDoc("string", "M", `"b"`), `"primaryType":"M"`, `"primaryType":"EIP712Domain","PrimaryType":"M"`, 1)), codes.InvalidArgument},
		attack{"transaction JSON, an access-list entry with a member go-ethereum would drop", nil, signTxJSON(strings.Replace(txOK, `{`, `{"accessList":[{"address":"0x1111111111111111111111111111111111111111","storageKeys":[],"evil":1}],`, 1)), codes.InvalidArgument},
		attack{"transaction JSON, access-list address twice but for case", nil, signTxJSON(strings.Replace(txOK, `{`, `{"accessList":[{"address":"0x1111111111111111111111111111111111111111","Address":"0x2222222222222222222222222222222222222222","storageKeys":[]}],`, 1)), codes.InvalidArgument},
	)
	return rows
}

// rss is the process's resident set size.
func rss(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// auditLines counts the records in the audit log so far.
func (e *mtlsEnv) auditLines(t testing.TB) int {
	b, err := os.ReadFile(e.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

func TestAttackSuite(t *testing.T) {
	e := newAttackEnv(t)
	health := healthpb.NewHealthClient(e.tenant)
	base := rss(t)
	for _, a := range attacks() {
		t.Run(a.name, func(t *testing.T) {
			conn := e.tenant
			if a.as != nil {
				conn = a.as(t, e)
			}
			before := e.auditLines(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if got := status.Code(a.call(ctx, conn)); got != a.want {
				t.Errorf("got %v, want %v", got, a.want)
			}
			// Every request that reached a Sigil method is on the record.
			reached := a.want != codes.Unavailable && a.want != codes.Unimplemented && a.want != codes.ResourceExhausted
			if after := e.auditLines(t); reached && after != before+1 {
				t.Errorf("%d audit records for one request", after-before)
			}
			hc, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("server unhealthy after the attack: %v %v", hc, err)
			}
			if grown := rss(t) - base; grown > rssBound {
				t.Fatalf("RSS grew by %d MiB", grown>>20)
			}
		})
	}
	// The spoofers' and strangers' requests changed nothing: only the
	// admin's own key and the tenant's own set were added.
	list, err := sigilv1.NewKeyServiceClient(e.admin).ListKeys(context.Background(), &sigilv1.ListKeysRequest{})
	if err != nil || len(list.GetKeys()) != 4 {
		t.Fatalf("keys after the suite: %d, %v", len(list.GetKeys()), err)
	}
	sets, err := sigilv1.NewJWTServiceClient(e.admin).ListJWKSets(context.Background(), &sigilv1.ListJWKSetsRequest{})
	if err != nil || len(sets.GetSets()) != 2 {
		t.Fatalf("JWK Sets after the suite (want default and issuer-ok): %v, %v", sets.GetSets(), err)
	}
}

// auditTail counts the audit records written since it last looked.
type auditTail struct {
	f   *os.File
	off int64
}

func (a *auditTail) newRecords(t testing.TB) int {
	b, err := io.ReadAll(io.NewSectionReader(a.f, a.off, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	a.off += int64(len(b))
	return bytes.Count(b, []byte("\n"))
}

// FuzzGRPC sends arbitrary bytes as the request of every Sigil method,
// over mTLS as a client the policy allows everything: no answer may be
// Internal or Unknown, the server must not fall over, and every request
// must leave one audit record.
func FuzzGRPC(f *testing.F) {
	e := newAttackEnv(f)
	conn := e.tenant
	methods := server.SigilMethodNames(f)
	for i, m := range []proto.Message{
		&sigilv1.SignRequest{KeyId: "raw-1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}},
		&sigilv1.SignJWTRequest{KeyId: "auth-jwt", ClaimsJson: []byte(`{"sub":"x"}`)},
		&sigilv1.SignTransactionRequest{KeyId: "treasury-1", Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(txOK)}},
		&sigilv1.SignTypedDataRequest{KeyId: "treasury-1", TypedDataJson: []byte(typedDoc("int8", "M", "-128"))},
		&sigilv1.GetKeyRequest{Id: "raw-1"},
		&sigilv1.ApproveRequest{ApprovalId: "0123456789abcdef0123456789abcdef", PayloadSha256: strings.Repeat("0", 64)},
	} {
		b, _ := proto.Marshal(m)
		f.Add(uint8(i), b)
	}
	tail := &auditTail{}
	var err error
	if tail.f, err = os.Open(e.AuditLog); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { tail.f.Close() })
	tail.newRecords(f)
	f.Fuzz(func(t *testing.T, which uint8, msg []byte) {
		if len(msg) > server.MaxRequestBytes {
			return
		}
		method := methods[int(which)%len(methods)]
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := invokeRaw(ctx, conn, method, msg)
		switch status.Code(err) {
		case codes.Internal, codes.Unknown, codes.Unavailable, codes.DeadlineExceeded:
			t.Fatalf("%s: %v", method, err)
		}
		if n := tail.newRecords(t); n != 1 {
			t.Fatalf("%s: %d audit records for one request", method, n)
		}
	})
}

// Streams to a unary method holding a request that does not decode and a
// second, large one: gRPC refuses the call before any interceptor runs,
// so nothing of it may stay behind (found by an attack review: a map of
// decode errors kept every such request, 200 KiB a call, for good).
func TestRefusedStreamsLeaveNothingBehind(t *testing.T) {
	e := newAttackEnv(t)
	bad := []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}
	big, _ := proto.Marshal(&sigilv1.SignRequest{KeyId: "raw-1", Input: &sigilv1.SignRequest_Message{Message: make([]byte, 200<<10)}})
	desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
	send := func(n int) {
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err := e.tenant.NewStream(ctx, desc, sigilv1.SigningService_Sign_FullMethodName, grpc.ForceCodec(rawCodec{}))
			if err != nil {
				t.Fatal(err)
			}
			st.SendMsg(bad)
			st.SendMsg(big)
			st.CloseSend()
			var out []byte
			if code := status.Code(st.RecvMsg(&out)); code == codes.OK {
				t.Fatal("two request messages to a unary method were answered OK")
			}
			cancel()
		}
	}
	send(5)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	send(300)
	time.Sleep(200 * time.Millisecond)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 20<<20 {
		t.Fatalf("300 refused calls left %d MiB on the heap", grown>>20)
	}
}

func createWith(req *sigilv1.CreateKeyRequest) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewKeyServiceClient(c).CreateKey(ctx, req)
		return err
	}
}

func createSet(req *sigilv1.CreateJWKSetRequest) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewJWTServiceClient(c).CreateJWKSet(ctx, req)
		return err
	}
}

func updatePolicy(req *sigilv1.UpdateKeyPolicyRequest) func(context.Context, *grpc.ClientConn) error {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := sigilv1.NewKeyServiceClient(c).UpdateKeyPolicy(ctx, req)
		return err
	}
}

// A tenant-scoped jwks.admin (keys: ["tenant-a-*"]) what the outside
// review did with it: name a set after another issuer, admit keys beyond
// its own, take every set slot. Each is refused; its own sets work, and
// an admin of every key keeps its slots.
func TestScopedJWKSAdminStaysWithinItsKeys(t *testing.T) {
	e := newAttackEnv(t)
	ctx := context.Background()
	tenantA := sigilv1.NewJWTServiceClient(e.Client(t, "spiffe://example.org/tenant-a/admin"))
	for _, tc := range []struct {
		what string
		req  *sigilv1.CreateJWKSetRequest
		want codes.Code
	}{
		{"a set named after another issuer, admitting its own keys", &sigilv1.CreateJWKSetRequest{Name: "tenant-b", KeyPatterns: []string{"tenant-a-*"}}, codes.PermissionDenied},
		{"a set named after another issuer, default patterns", &sigilv1.CreateJWKSetRequest{Name: "tenant-b"}, codes.PermissionDenied},
		{"its own set admitting another tenant's keys", &sigilv1.CreateJWKSetRequest{Name: "tenant-a-web", KeyPatterns: []string{"tenant-b-*"}}, codes.PermissionDenied},
		{"its own set admitting every key", &sigilv1.CreateJWKSetRequest{Name: "tenant-a-web", KeyPatterns: []string{"*"}}, codes.PermissionDenied},
		{"its own set admitting a wider glob", &sigilv1.CreateJWKSetRequest{Name: "tenant-a-web", KeyPatterns: []string{"tenant-*"}}, codes.PermissionDenied},
		{"its own set", &sigilv1.CreateJWKSetRequest{Name: "tenant-a-web"}, codes.OK},
		{"its own set, narrower patterns", &sigilv1.CreateJWKSetRequest{Name: "tenant-a-api", KeyPatterns: []string{"tenant-a-api-*", "tenant-a-web"}}, codes.OK},
	} {
		if _, err := tenantA.CreateJWKSet(ctx, tc.req); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.what, err, tc.want)
		}
	}
	// Slot exhaustion: a scoped admin makes at most MaxSetsPerCreator.
	made := 2
	var err error
	for ; made < jwt.MaxSetsPerCreator+5; made++ {
		if _, err = tenantA.CreateJWKSet(ctx, &sigilv1.CreateJWKSetRequest{Name: fmt.Sprintf("tenant-a-s%d", made)}); err != nil {
			break
		}
	}
	if status.Code(err) != codes.ResourceExhausted || made != jwt.MaxSetsPerCreator {
		t.Fatalf("a scoped admin made %d sets, then %v; want %d, then ResourceExhausted", made, err, jwt.MaxSetsPerCreator)
	}
	if _, err := sigilv1.NewJWTServiceClient(e.tenant).CreateJWKSet(ctx, &sigilv1.CreateJWKSetRequest{Name: "issuer-global"}); err != nil {
		t.Fatalf("an admin of every key, after a scoped one spent its slots: %v", err)
	}

	// The default set (/.well-known/jwks.json) is the main issuer's: a
	// scoped admin's key joins it neither by default nor by name, nor by
	// a policy change; its own set is fine.
	keysA := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/tenant-a/admin"))
	for _, tc := range []struct {
		what string
		req  *sigilv1.CreateKeyRequest
		want codes.Code
	}{
		{"a jwt key naming no set (default)", &sigilv1.CreateKeyRequest{Id: "tenant-a-evil", Algorithm: "ES256", Purpose: "jwt"}, codes.PermissionDenied},
		{"a jwt key naming the default set", &sigilv1.CreateKeyRequest{Id: "tenant-a-evil", Algorithm: "ES256", Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"default"}}}, codes.PermissionDenied},
		{"a jwt key in its own set", &sigilv1.CreateKeyRequest{Id: "tenant-a-web-1", Algorithm: "ES256", Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"tenant-a-web"}}}, codes.OK},
		{"an ES256K jwt key naming no set (none)", &sigilv1.CreateKeyRequest{Id: "tenant-a-k1", Algorithm: "ES256K", Purpose: "jwt"}, codes.OK},
	} {
		if _, err := keysA.CreateKey(ctx, tc.req); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.what, err, tc.want)
		}
	}
	_, err = keysA.UpdateKeyPolicy(ctx, &sigilv1.UpdateKeyPolicyRequest{Id: "tenant-a-web-1", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"default"}}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("moving its key into the default set: %v, want PermissionDenied", err)
	}
	if _, err := sigilv1.NewKeyServiceClient(e.tenant).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "main-jwt", Algorithm: "ES256", Purpose: "jwt"}); err != nil {
		t.Errorf("an admin of every key publishing in the default set: %v", err)
	}
}
