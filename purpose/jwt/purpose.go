package jwt

import (
	"context"
	"crypto"
	"encoding/json"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/signer"
)

// Name is the purpose's name.
const Name = "jwt"

// OpSign allows SignJWT.
const OpSign authz.Op = "sign.jwt"

// Policy is a JWT key's policy: its rotation schedule (DESIGN.md,
// Rotation). Its MaxTokenTTL bounds every token's exp.
type Policy = keyring.Schedule

// DefaultPolicy is used for whatever a create request leaves unset.
var DefaultPolicy = Policy{RotateEvery: 7 * 24 * time.Hour, PublishAhead: 24 * time.Hour, MaxTokenTTL: time.Hour, Skew: time.Minute}

// Purpose is the JWT purpose.
type Purpose struct{}

var _ purpose.Purpose = Purpose{}

func init() { purpose.Register(Purpose{}) }

// Name implements keyring.Purpose.
func (Purpose) Name() string { return Name }

// CheckAlgorithm accepts every algorithm: each has its JWS name
// (secp256k1 is ES256K, RFC 8812).
func (Purpose) CheckAlgorithm(signer.Algorithm) error { return nil }

// Rotation: on the key's schedule.
func (Purpose) Rotation() keyring.Rotation { return keyring.RotateScheduled }

// DecodePolicy reads a stored schedule.
func (Purpose) DecodePolicy(raw json.RawMessage) (any, error) {
	p := DefaultPolicy
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
	}
	return &p, nil
}

// NewPolicy overlays the requested schedule on DefaultPolicy.
func (Purpose) NewPolicy(requested any) (any, error) {
	return overlay(DefaultPolicy, requested)
}

// UpdatePolicy overlays the requested schedule on the current one.
func (Purpose) UpdatePolicy(old, requested any) (any, error) {
	cur, ok := old.(*Policy)
	if !ok {
		cur = &DefaultPolicy
	}
	return overlay(*cur, requested)
}

// overlay returns base with requested's set fields, checked.
func overlay(base Policy, requested any) (any, error) {
	if requested != nil {
		r, ok := requested.(*Policy)
		if !ok {
			return nil, errs.New(errs.InvalidArgument, "a jwt key's policy is a rotation schedule, not %T", requested)
		}
		if r != nil {
			base = base.Overlay(*r)
		}
	}
	if err := base.Validate(); err != nil {
		return nil, err
	}
	return &base, nil
}

// Attributes: a JWT key is known by its ID and its generations' kids.
func (Purpose) Attributes(crypto.PublicKey) (map[string]string, error) { return nil, nil }

// PolicyOf returns JWT key k's schedule.
func PolicyOf(k *keyring.Key) Policy {
	if p, ok := k.Policy().(*Policy); ok {
		return *p
	}
	return DefaultPolicy
}

// Operations implements purpose.Purpose.
func (Purpose) Operations() map[string]authz.Op {
	return map[string]authz.Op{sigilv1.JWTService_SignJWT_FullMethodName: OpSign}
}

// Payload is the claims to sign.
func (Purpose) Payload(req any) []byte {
	if r, ok := req.(*sigilv1.SignJWTRequest); ok {
		return r.GetClaimsJson()
	}
	return nil
}

// RequestedPolicy reads jwt_policy; unset durations stay zero ("keep" or
// "default").
func (Purpose) RequestedPolicy(req purpose.PolicyRequest) (any, error) {
	p := req.GetJwtPolicy()
	if p == nil {
		return nil, nil
	}
	return &Policy{RotateEvery: p.GetRotateEvery().AsDuration(), PublishAhead: p.GetPublishAhead().AsDuration(),
		MaxTokenTTL: p.GetMaxTokenTtl().AsDuration(), Skew: p.GetSkew().AsDuration()}, nil
}

// Describe sets jwt_policy, with the JWKS max-age the schedule allows.
func (Purpose) Describe(k *keyring.Key, out *sigilv1.Key) {
	p := PolicyOf(k)
	out.JwtPolicy = &sigilv1.JWTPolicy{RotateEvery: durationpb.New(p.RotateEvery), PublishAhead: durationpb.New(p.PublishAhead),
		MaxTokenTtl: durationpb.New(p.MaxTokenTTL), Skew: durationpb.New(p.Skew), JwksMaxAge: durationpb.New(p.MaxAge())}
}

// Service implements purpose.Purpose.
func (Purpose) Service(d purpose.Deps) (*grpc.ServiceDesc, any) {
	return &sigilv1.JWTService_ServiceDesc, &service{d: d}
}

// service implements sigil.v1.JWTService.
type service struct {
	sigilv1.UnimplementedJWTServiceServer
	d purpose.Deps
}

var _ sigilv1.JWTServiceServer = (*service)(nil)

// SignJWT mints a token with the key's active generation.
func (s *service) SignJWT(ctx context.Context, req *sigilv1.SignJWTRequest) (*sigilv1.SignJWTResponse, error) {
	sg, err := s.d.Keys.ForSigning(ctx, req.GetKeyId(), Name)
	if err != nil {
		return nil, err
	}
	p, err := Prepare(Request{Claims: req.GetClaimsJson(), Headers: req.GetHeadersJson(), TTL: req.GetTtl().AsDuration()}, PolicyOf(sg.Key), s.d.Clock())
	if err != nil {
		return nil, err
	}
	var tok Token
	if err := s.d.Sign(ctx, sg, func() (err error) { tok, err = Sign(ctx, sg, p); return err }); err != nil {
		return nil, err
	}
	return &sigilv1.SignJWTResponse{Token: tok.Compact, Kid: tok.KID, Generation: int32(tok.Generation),
		IssueTime: timestamppb.New(tok.IssuedAt), ExpireTime: timestamppb.New(tok.Expiry)}, nil
}
