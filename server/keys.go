package server

import (
	"context"
	"encoding/base64"
	"slices"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

// keyService implements sigil.v1.KeyService over the keyring.
type keyService struct {
	sigilv1.UnimplementedKeyServiceServer
	keys    *keyring.Keyring
	visible func(ctx context.Context, id string) bool // the caller may read key id
}

var _ sigilv1.KeyServiceServer = (*keyService)(nil)

func (s *keyService) CreateKey(ctx context.Context, req *sigilv1.CreateKeyRequest) (*sigilv1.CreateKeyResponse, error) {
	purpose := req.GetPurpose()
	if purpose == "" {
		purpose = string(keyring.PurposeRaw)
	}
	spec := keyring.CreateSpec{
		ID: req.GetId(), Purpose: keyring.Purpose(purpose), Algorithm: signer.Algorithm(req.GetAlgorithm()),
		RSABits: int(req.GetRsaBits()), Backend: req.GetBackend(), RequestID: req.GetRequestId(),
	}
	if req.GetJwtPolicy() != nil {
		p := policyFromProto(req.GetJwtPolicy())
		spec.JWT = &p
	}
	if req.GetEthPolicy() != nil {
		p, err := ethPolicyFromProto(req.GetEthPolicy())
		if err != nil {
			return nil, err
		}
		spec.Eth = &p
	}
	k, err := s.keys.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	pk, err := keyToProto(k)
	return &sigilv1.CreateKeyResponse{Key: pk}, err
}

func (s *keyService) GetKey(ctx context.Context, req *sigilv1.GetKeyRequest) (*sigilv1.GetKeyResponse, error) {
	k, err := s.keys.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	pk, err := keyToProto(k)
	return &sigilv1.GetKeyResponse{Key: pk}, err
}

// Page sizes of ListKeys.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

func (s *keyService) ListKeys(ctx context.Context, req *sigilv1.ListKeysRequest) (*sigilv1.ListKeysResponse, error) {
	match, err := keyFilter(req)
	if err != nil {
		return nil, err
	}
	size, after, err := page(req)
	if err != nil {
		return nil, err
	}
	resp := &sigilv1.ListKeysResponse{}
	for _, k := range s.keys.List(ctx) { // in ID order
		if k.ID <= after || !match(k) || !s.visible(ctx, k.ID) {
			continue
		}
		if len(resp.Keys) == size {
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(resp.Keys[size-1].GetId()))
			break
		}
		pk, err := keyToProto(k)
		if err != nil {
			return nil, err
		}
		resp.Keys = append(resp.Keys, pk)
	}
	return resp, nil
}

// keyFilter is the ListKeys request's purpose and state filter.
func keyFilter(req *sigilv1.ListKeysRequest) (func(*keyring.Key) bool, error) {
	purpose, state := keyring.Purpose(req.GetPurpose()), keyring.State(req.GetState())
	if _, err := keyring.ParsePurpose(string(purpose)); err != nil && purpose != "" && purpose != keyring.PurposeAudit {
		return nil, err
	}
	if state != "" && !slices.Contains(keyring.States, state) {
		return nil, errs.New(errs.InvalidArgument, "state: %q is not one of %v", state, keyring.States)
	}
	return func(k *keyring.Key) bool {
		return (purpose == "" || k.Purpose == purpose) &&
			(state == "" || slices.ContainsFunc(k.Generations, func(g keyring.Generation) bool { return g.State == state }))
	}, nil
}

// page is a ListKeys request's page size and the ID its page starts after.
func page(req *sigilv1.ListKeysRequest) (int, string, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = defaultPageSize
	case size < 0 || size > maxPageSize:
		return 0, "", errs.New(errs.InvalidArgument, "page_size: 1 to %d", maxPageSize)
	}
	after, err := base64.RawURLEncoding.DecodeString(req.GetPageToken())
	if err != nil || (len(after) > 0 && keyring.ValidateID(string(after)) != nil) {
		return 0, "", errs.New(errs.InvalidArgument, "page_token: not one ListKeys gave")
	}
	return size, string(after), nil
}

func (s *keyService) GetPublicKey(ctx context.Context, req *sigilv1.GetPublicKeyRequest) (*sigilv1.GetPublicKeyResponse, error) {
	k, err := s.keys.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	g, err := findGeneration(k, req.GetGeneration(), req.GetKid())
	if err != nil {
		return nil, err
	}
	pem, err := signer.PublicKeyPEM(g.Public())
	if err != nil {
		return nil, err
	}
	return &sigilv1.GetPublicKeyResponse{Generation: int32(g.Number), Kid: g.KID(), PublicKeyPem: pem, PublicKeyDer: g.PublicKey}, nil
}

// findGeneration picks the generation a request names by number or kid
// (not both), or the active one.
func findGeneration(k *keyring.Key, n int32, kid string) (*keyring.Generation, error) {
	switch {
	case n < 0:
		return nil, errs.New(errs.InvalidArgument, "generation: must be 1 or more")
	case n != 0 && kid != "":
		return nil, errs.New(errs.InvalidArgument, "name a generation by number or by kid, not both")
	}
	return k.Find(int(n), kid)
}

func (s *keyService) UpdateKeyPolicy(ctx context.Context, req *sigilv1.UpdateKeyPolicyRequest) (*sigilv1.UpdateKeyPolicyResponse, error) {
	var k *keyring.Key
	var err error
	switch {
	case req.GetJwtPolicy() != nil && req.GetEthPolicy() != nil:
		return nil, errs.New(errs.InvalidArgument, "send jwt_policy or eth_policy, not both")
	case req.GetJwtPolicy() != nil:
		k, err = s.keys.SetJWTPolicy(ctx, req.GetId(), policyFromProto(req.GetJwtPolicy()))
	case req.GetEthPolicy() != nil:
		var p keyring.EthPolicy
		if p, err = ethPolicyFromProto(req.GetEthPolicy()); err == nil {
			k, err = s.keys.SetEthPolicy(ctx, req.GetId(), p)
		}
	default:
		return nil, errs.New(errs.InvalidArgument, "jwt_policy or eth_policy: missing")
	}
	if err != nil {
		return nil, err
	}
	pk, err := keyToProto(k)
	return &sigilv1.UpdateKeyPolicyResponse{Key: pk}, err
}

func (s *keyService) RotateKey(ctx context.Context, req *sigilv1.RotateKeyRequest) (*sigilv1.RotateKeyResponse, error) {
	k, err := s.keys.Rotate(ctx, req.GetId(), req.GetImmediate())
	if err != nil {
		return nil, err
	}
	pk, err := keyToProto(k)
	return &sigilv1.RotateKeyResponse{Key: pk}, err
}

func (s *keyService) RevokeGeneration(ctx context.Context, req *sigilv1.RevokeGenerationRequest) (*sigilv1.RevokeGenerationResponse, error) {
	if req.GetGeneration() < 1 {
		return nil, errs.New(errs.InvalidArgument, "generation: must be 1 or more")
	}
	k, err := s.keys.Revoke(ctx, req.GetId(), int(req.GetGeneration()))
	if err != nil {
		return nil, err
	}
	pk, err := keyToProto(k)
	return &sigilv1.RevokeGenerationResponse{Key: pk}, err
}

func (s *keyService) DisableKey(ctx context.Context, req *sigilv1.DisableKeyRequest) (*sigilv1.DisableKeyResponse, error) {
	pk, err := s.setDisabled(ctx, req.GetId(), true)
	return &sigilv1.DisableKeyResponse{Key: pk}, err
}

func (s *keyService) EnableKey(ctx context.Context, req *sigilv1.EnableKeyRequest) (*sigilv1.EnableKeyResponse, error) {
	pk, err := s.setDisabled(ctx, req.GetId(), false)
	return &sigilv1.EnableKeyResponse{Key: pk}, err
}

func (s *keyService) setDisabled(ctx context.Context, id string, disabled bool) (*sigilv1.Key, error) {
	k, err := s.keys.SetDisabled(ctx, id, disabled)
	if err != nil {
		return nil, err
	}
	return keyToProto(k)
}

// policyFromProto converts a policy; unset durations stay zero ("keep" or
// "default").
func policyFromProto(p *sigilv1.JWTPolicy) keyring.JWTPolicy {
	return keyring.JWTPolicy{RotateEvery: p.GetRotateEvery().AsDuration(), PublishAhead: p.GetPublishAhead().AsDuration(),
		MaxTokenTTL: p.GetMaxTokenTtl().AsDuration(), Skew: p.GetSkew().AsDuration()}
}

func policyToProto(p *keyring.JWTPolicy) *sigilv1.JWTPolicy {
	if p == nil {
		return nil
	}
	return &sigilv1.JWTPolicy{RotateEvery: durationpb.New(p.RotateEvery), PublishAhead: durationpb.New(p.PublishAhead),
		MaxTokenTtl: durationpb.New(p.MaxTokenTTL), Skew: durationpb.New(p.Skew), JwksMaxAge: durationpb.New(p.MaxAge())}
}

// ethPolicyFromProto parses a spending policy; errors name the field.
func ethPolicyFromProto(p *sigilv1.EthPolicy) (keyring.EthPolicy, error) {
	out := keyring.EthPolicy{ChainIDs: p.GetChainIds()}
	for _, id := range out.ChainIDs {
		if id == 0 {
			return out, errs.New(errs.InvalidArgument, "chain-ids: 0 is not a chain ID")
		}
	}
	for _, w := range []struct {
		field, value string
		dst          **keyring.Wei
	}{{"max-value", p.GetMaxValue(), &out.MaxValue}, {"max-fee", p.GetMaxFee(), &out.MaxFee}, {"daily-limit", p.GetDailyLimit(), &out.DailyLimit}} {
		if w.value == "" {
			continue
		}
		v, err := keyring.ParseWei(w.field, w.value)
		if err != nil {
			return out, err
		}
		*w.dst = v
	}
	for _, a := range p.GetAllowTo() {
		addr, err := keyring.ParseAddress("allow-to", a)
		if err != nil {
			return out, err
		}
		out.AllowTo = append(out.AllowTo, addr)
	}
	for _, sel := range p.GetAllowSelectors() {
		b, err := keyring.ParseSelector(sel)
		if err != nil {
			return out, err
		}
		out.AllowSelectors = append(out.AllowSelectors, b)
	}
	return out, nil
}

func ethPolicyToProto(p *keyring.EthPolicy) *sigilv1.EthPolicy {
	if p == nil {
		return nil
	}
	out := &sigilv1.EthPolicy{ChainIds: p.ChainIDs}
	for _, w := range []struct {
		v   *keyring.Wei
		dst *string
	}{{p.MaxValue, &out.MaxValue}, {p.MaxFee, &out.MaxFee}, {p.DailyLimit, &out.DailyLimit}} {
		if w.v != nil {
			*w.dst = w.v.String()
		}
	}
	for _, a := range p.AllowTo {
		out.AllowTo = append(out.AllowTo, a.Hex())
	}
	for _, sel := range p.AllowSelectors {
		out.AllowSelectors = append(out.AllowSelectors, hexutil.Encode(sel[:]))
	}
	return out
}

// timeOrNil keeps unset times out of responses.
func timeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func keyToProto(k *keyring.Key) (*sigilv1.Key, error) {
	pk := &sigilv1.Key{
		Id: k.ID, Algorithm: string(k.Algorithm), Purpose: string(k.Purpose), Backend: k.Backend,
		RsaBits: int32(k.RSABits), CreateTime: timestamppb.New(k.CreatedAt), JwtPolicy: policyToProto(k.JWT),
		EthPolicy: ethPolicyToProto(k.Eth), Address: k.Address, Disabled: k.Disabled,
	}
	for i := range k.Generations {
		g := &k.Generations[i]
		if g.State == keyring.StateCreating {
			continue
		}
		pg := &sigilv1.Generation{Generation: int32(g.Number), State: string(g.State), Kid: g.KID(), BackendRef: g.Ref,
			CreateTime: timestamppb.New(g.CreatedAt), UnpublishTime: timeOrNil(g.UnpublishAt)}
		if g.State == keyring.StatePending {
			pg.ActivateTime = timeOrNil(g.ActivateAt)
		}
		if g.Public() != nil {
			pem, err := signer.PublicKeyPEM(g.Public())
			if err != nil {
				return nil, err
			}
			pg.PublicKeyPem = pem
		}
		pk.Generations = append(pk.Generations, pg)
	}
	return pk, nil
}
