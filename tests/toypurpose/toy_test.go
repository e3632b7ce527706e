// Package toypurpose_test shows that a signing purpose is one package: a
// toy purpose, "stamp", lives wholly in this file (its policy, rotation,
// attributes, gRPC service, authorization operation and audit payload),
// registers itself, and a real server (SoftHSM, mTLS, policy file, audit
// log) serves it with no change to the keyring, the server or the proto.
// Its "proto" reuses sigil.v1 messages under a service of its own,
// described by hand; a real purpose would generate both.
package toypurpose_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/server/servertest"
	"github.com/sigil-hsm/sigil/signer"
)

// The toy purpose: a stamp key signs, with ES256, the fixed-format
// message "stamp:v1:<prefix>:<text>", where its policy sets the prefix
// and the client sends a short printable text.

const (
	stampName   = "stamp"
	opStamp     = authz.Op("toy.stamp")
	stampMethod = "/sigil.toy.v1.StampService/Stamp"
	// peekMethod's request names no key (a careless plug-in): the server
	// must refuse it rather than authorize it as a listing.
	peekMethod = "/sigil.toy.v1.StampService/Peek"
)

// stampPolicy is the prefix every stamp carries.
type stampPolicy struct {
	Prefix string `json:"prefix"`
}

type stampPurpose struct{}

var _ purpose.Purpose = stampPurpose{}

func init() { purpose.Register(stampPurpose{}) }

func (stampPurpose) Name() string               { return stampName }
func (stampPurpose) Rotation() keyring.Rotation { return keyring.RotateOnDemand }
func (stampPurpose) Operations() map[string]authz.Op {
	return map[string]authz.Op{stampMethod: opStamp, peekMethod: opStamp}
}

func (stampPurpose) CheckAlgorithm(alg signer.Algorithm) error {
	if alg != signer.ES256 {
		return errs.New(errs.InvalidArgument, "stamps are ES256")
	}
	return nil
}

func (stampPurpose) DecodePolicy(raw json.RawMessage) (any, error) {
	var p stampPolicy
	return &p, json.Unmarshal(raw, &p)
}

func (p stampPurpose) NewPolicy(requested any) (any, error) { return p.UpdatePolicy(nil, requested) }

func (stampPurpose) UpdatePolicy(_, requested any) (any, error) {
	r, ok := requested.(*stampPolicy)
	if !ok || r == nil || r.Prefix == "" || len(r.Prefix) > 16 || strings.ContainsAny(r.Prefix, ":\n") {
		return nil, errs.New(errs.InvalidArgument, "a stamp key needs a prefix: 1 to 16 bytes, no colon")
	}
	return r, nil
}

// Attributes: a short fingerprint of the public key.
func (stampPurpose) Attributes(pub crypto.PublicKey) (map[string]string, error) {
	der, err := signer.MarshalPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return map[string]string{"fingerprint": hex.EncodeToString(sum[:4])}, nil
}

func (stampPurpose) Payload(req any) []byte {
	if r, ok := req.(*sigilv1.SignMessageRequest); ok {
		return r.GetMessage()
	}
	return nil
}

// RequestedPolicy reads the generic policy field: a StringValue prefix.
func (stampPurpose) RequestedPolicy(req purpose.PolicyRequest) (any, error) {
	a := req.GetPolicy()
	var prefix wrapperspb.StringValue
	if a == nil || !a.MessageIs(&prefix) {
		return nil, nil
	}
	if err := a.UnmarshalTo(&prefix); err != nil {
		return nil, errs.New(errs.InvalidArgument, "policy: %v", err)
	}
	return &stampPolicy{Prefix: prefix.GetValue()}, nil
}

func (stampPurpose) Describe(k *keyring.Key, out *sigilv1.Key) {
	if p, ok := k.Policy().(*stampPolicy); ok {
		out.Policy, _ = anypb.New(wrapperspb.String(p.Prefix))
	}
}

func (stampPurpose) Service(d purpose.Deps) (*grpc.ServiceDesc, any) {
	return &stampDesc, &stampService{d}
}

// stamper is the service's handler type.
type stamper interface {
	Stamp(context.Context, *sigilv1.SignMessageRequest) (*sigilv1.SignResponse, error)
	Peek(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

var stampDesc = grpc.ServiceDesc{
	ServiceName: "sigil.toy.v1.StampService",
	HandlerType: (*stamper)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Stamp", Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
		req := new(sigilv1.SignMessageRequest)
		if err := dec(req); err != nil {
			return nil, err
		}
		return in(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: stampMethod}, func(ctx context.Context, req any) (any, error) {
			return srv.(stamper).Stamp(ctx, req.(*sigilv1.SignMessageRequest))
		})
	}}, {MethodName: "Peek", Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
		req := new(wrapperspb.StringValue)
		if err := dec(req); err != nil {
			return nil, err
		}
		return in(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: peekMethod}, func(ctx context.Context, req any) (any, error) {
			return srv.(stamper).Peek(ctx, req.(*wrapperspb.StringValue))
		})
	}}},
}

// Peek would sign with the key its request names in a field of its own.
func (s *stampService) Peek(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return nil, errs.New(errs.Internal, "Peek reached its handler: the server let a request that names no key through")
}

type stampService struct{ d purpose.Deps }

func stampInput(prefix string, text []byte) []byte {
	sum := sha256.Sum256([]byte("stamp:v1:" + prefix + ":" + string(text)))
	return sum[:]
}

func (s *stampService) Stamp(ctx context.Context, req *sigilv1.SignMessageRequest) (*sigilv1.SignResponse, error) {
	sg, err := s.d.Keys.ForSigning(ctx, req.GetKeyId(), stampName)
	if err != nil {
		return nil, err
	}
	text := req.GetMessage()
	if len(text) == 0 || len(text) > 64 || strings.ContainsFunc(string(text), func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return nil, errs.New(errs.InvalidArgument, "a stamp's text is 1 to 64 printable ASCII bytes")
	}
	var sig []byte
	input := stampInput(sg.Key.Policy().(*stampPolicy).Prefix, text)
	if err := s.d.Sign(ctx, sg, func(ctx context.Context) (err error) { sig, err = sg.Sign(ctx, input); return err }); err != nil {
		return nil, err
	}
	return &sigilv1.SignResponse{Signature: sig, Algorithm: string(sg.Key.Algorithm), Generation: int32(sg.Generation.Number), Kid: sg.Generation.KID()}, nil
}

// The test.

func TestMain(m *testing.M) { softhsmtest.Main(m, 1) }

const policy = `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/stamper
    keys: ["stamp-*"]
    allow: [toy.stamp]
  - identity: spiffe://example.org/raw-signer
    keys: ["*"]
    allow: [sign.raw]
`

func stamp(conn *grpc.ClientConn, id, text string) (*sigilv1.SignResponse, error) {
	out := new(sigilv1.SignResponse)
	return out, conn.Invoke(context.Background(), stampMethod, &sigilv1.SignMessageRequest{KeyId: id, Message: []byte(text)}, out)
}

func wantCode(t *testing.T, what string, err error, c codes.Code) {
	t.Helper()
	if status.Code(err) != c {
		t.Errorf("%s: got %v, want %v", what, err, c)
	}
}

func TestAFourthPurposeIsOnePackage(t *testing.T) {
	ctx := context.Background()
	e := servertest.NewMTLS(t, policy)
	ops := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops"))
	stamper := e.Client(t, "spiffe://example.org/stamper")

	prefix, _ := anypb.New(wrapperspb.String("acme"))
	resp, err := ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "stamp-1", Algorithm: "ES256", Purpose: stampName, Policy: prefix})
	if err != nil {
		t.Fatal(err)
	}
	k := resp.GetKey()
	var got wrapperspb.StringValue
	if k.GetPurpose() != stampName || k.GetPolicy().UnmarshalTo(&got) != nil || got.GetValue() != "acme" {
		t.Fatalf("created key: %v", k)
	}

	// Its own refusals: the wrong algorithm, no policy, another purpose's
	// policy; and its policy refused on a key of another purpose.
	_, err = ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "stamp-2", Algorithm: "ES384", Purpose: stampName, Policy: prefix})
	wantCode(t, "ES384 stamp key", err, codes.InvalidArgument)
	_, err = ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "stamp-2", Algorithm: "ES256", Purpose: stampName})
	wantCode(t, "stamp key without a prefix", err, codes.InvalidArgument)
	_, err = ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "stamp-2", Algorithm: "ES256", Purpose: stampName, Policy: prefix, JwtPolicy: &sigilv1.JWTPolicy{}})
	wantCode(t, "stamp key with a jwt policy", err, codes.InvalidArgument)
	_, err = ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "raw-2", Algorithm: "ES256", Purpose: "raw", Policy: prefix})
	wantCode(t, "raw key with a stamp policy", err, codes.InvalidArgument)

	// It signs its fixed format, verifiably, for the client its
	// operation allows, and for no other.
	pub := publicKey(t, ops, "stamp-1")
	sig, err := stamp(stamper, "stamp-1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if signer.Verify(pub, signer.ES256, stampInput("acme", []byte("hello")), sig.GetSignature()) != nil {
		t.Error("the stamp does not verify over stamp:v1:acme:hello")
	}
	_, err = stamp(e.Client(t, "spiffe://example.org/raw-signer"), "stamp-1", "hello")
	wantCode(t, "stamp by a raw signer", err, codes.PermissionDenied)
	err = stamper.Invoke(ctx, peekMethod, wrapperspb.String("stamp-2"), new(wrapperspb.StringValue))
	wantCode(t, "a purpose's request that names no key", err, codes.InvalidArgument)
	_, err = stamp(stamper, "stamp-1", "bad\ntext")
	wantCode(t, "stamp of a text out of format", err, codes.InvalidArgument)
	rawSigner := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/raw-signer"))
	_, err = rawSigner.Sign(ctx, &sigilv1.SignRequest{KeyId: "stamp-1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
	wantCode(t, "raw signature with a stamp key", err, codes.FailedPrecondition)

	// Its policy changes through UpdateKeyPolicy; it rotates as it says.
	next, _ := anypb.New(wrapperspb.String("acme2"))
	if _, err := ops.UpdateKeyPolicy(ctx, &sigilv1.UpdateKeyPolicyRequest{Id: "stamp-1", Policy: next}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: "stamp-1"}); err != nil {
		t.Fatal(err)
	}
	sig, err = stamp(stamper, "stamp-1", "again")
	if err != nil || sig.GetGeneration() != 2 {
		t.Fatalf("after rotation: generation %d, %v", sig.GetGeneration(), err)
	}
	if signer.Verify(publicKey(t, ops, "stamp-1"), signer.ES256, stampInput("acme2", []byte("again")), sig.GetSignature()) != nil {
		t.Error("the stamp under the new prefix does not verify")
	}
	list, err := ops.ListKeys(ctx, &sigilv1.ListKeysRequest{Purpose: stampName})
	if err != nil || len(list.GetKeys()) != 1 {
		t.Errorf("listing stamp keys: %v %v", list, err)
	}

	// Every use is audited with the payload's hash, under its operation.
	log, _ := os.ReadFile(e.AuditLog)
	hello := sha256.Sum256([]byte("hello"))
	if !strings.Contains(string(log), `"operation":"toy.stamp"`) || !strings.Contains(string(log), hex.EncodeToString(hello[:])) {
		t.Errorf("the audit log lacks the stamp:\n%s", log)
	}
}

func publicKey(t *testing.T, ops sigilv1.KeyServiceClient, id string) *ecdsa.PublicKey {
	t.Helper()
	resp, err := ops.GetPublicKey(context.Background(), &sigilv1.GetPublicKeyRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signer.ParsePublicKey(resp.GetPublicKeyDer())
	if err != nil {
		t.Fatal(err)
	}
	return pub.(*ecdsa.PublicKey)
}
