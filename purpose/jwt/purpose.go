package jwt

import (
	"context"
	"crypto"
	"encoding/json"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/signer"
)

// Name is the purpose's name.
const Name = "jwt"

// OpSign allows SignJWT; OpSetsAdmin creates JWK Sets (a deployment's
// operators: a set decides which keys an issuer's relying parties trust).
const (
	OpSign      authz.Op = "sign.jwt"
	OpSetsAdmin authz.Op = "jwks.admin"
)

// Policy is a JWT key's policy: its rotation schedule (DESIGN.md,
// Rotation), whose MaxTokenTTL bounds every token's exp, and the JWK Sets
// it is published in.
type Policy struct {
	keyring.Schedule
	// Sets are the JWK Sets the key belongs to (see Sets); none given
	// means DefaultSet, or none at all for an ES256K key.
	Sets []string `json:"jwks_sets,omitempty"`
}

// DefaultPolicy is used for whatever a create request leaves unset.
var DefaultPolicy = Policy{Schedule: keyring.Schedule{RotateEvery: 7 * 24 * time.Hour, PublishAhead: 24 * time.Hour, MaxTokenTTL: time.Hour, Skew: time.Minute}}

// Purpose is the JWT purpose.
type Purpose struct{}

var (
	_ purpose.Purpose = Purpose{}
	_ purpose.Keyless = Purpose{}
)

func init() { purpose.Register(Purpose{}) }

// Name implements keyring.Purpose.
func (Purpose) Name() string { return Name }

// CheckAlgorithm accepts every algorithm: each has its JWS name
// (secp256k1 is ES256K, RFC 8812).
func (Purpose) CheckAlgorithm(signer.Algorithm) error { return nil }

// Rotation: on the key's schedule.
func (Purpose) Rotation() keyring.Rotation { return keyring.RotateScheduled }

// DecodePolicy reads a stored policy (the default if none is stored) and
// checks it as a request's would be: a record edited by hand must not
// make the scheduler mint keys in a loop.
func (Purpose) DecodePolicy(raw json.RawMessage) (any, error) {
	p := DefaultPolicy
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, checkSetNames(p.Sets)
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
			return nil, errs.New(errs.InvalidArgument, "a jwt key's policy is a rotation schedule and JWK Sets, not %T", requested)
		}
		if r != nil {
			base.Schedule = base.Schedule.Overlay(r.Schedule)
			if len(r.Sets) > 0 {
				base.Sets = slices.Clone(r.Sets)
			}
		}
	}
	if err := base.Validate(); err != nil {
		return nil, err
	}
	if err := checkSetNames(base.Sets); err != nil {
		return nil, err
	}
	return &base, nil
}

// CheckPolicy refuses a policy that names a JWK Set no one created, one
// whose key patterns do not admit key id, or puts an ES256K key in a set
// that did not opt in to them.
func (Purpose) CheckPolicy(ctx context.Context, a keyring.Anchors, id string, alg signer.Algorithm, policy any) error {
	p, ok := policy.(*Policy)
	if !ok {
		return nil
	}
	for _, name := range p.Sets {
		set, err := Sets{a}.Get(ctx, name)
		if err != nil {
			return err
		}
		if !set.Admits(id) {
			return errs.New(errs.PermissionDenied, "JWK Set %q does not admit key %q (its key patterns: %v)", name, id, set.KeyPatterns)
		}
		if alg == signer.ES256K && !set.AllowES256K {
			return errs.New(errs.FailedPrecondition, "JWK Set %q does not take ES256K keys (many relying-party libraries reject a whole set holding one); use a set made with --allow-es256k", name)
		}
	}
	return nil
}

// CheckScope refuses to publish a key in the default JWK Set (served at
// /.well-known/jwks.json, trusted by the main issuer's relying parties)
// unless the caller's keys.admin rule covers every key: an admin of
// "tenant-a-*" could otherwise mint tokens the main issuer's relying
// parties accept. Such an admin names a set of its own (--jwks-set).
func (Purpose) CheckScope(ctx context.Context, d purpose.Deps, id string, alg signer.Algorithm, cur, next any) error {
	if !joinsDefault(alg, cur, next) {
		return nil
	}
	if _, all := d.Covers(ctx, authz.KeysAdmin, []string{namespace.Qualify(namespace.Of(id), "*")}); !all {
		return errs.New(errs.PermissionDenied, "key %q: only an admin of every key of the namespace may publish a key in its %q JWK Set; name a set of your own (--jwks-set)", namespace.Local(id), DefaultSet)
	}
	return nil
}

// joinsDefault reports whether a key with policy next, which had cur, is
// published in the default set and was not before.
func joinsDefault(alg signer.Algorithm, cur, next any) bool {
	in := func(policy any) bool {
		p, ok := policy.(*Policy)
		if !ok || len(p.Sets) == 0 {
			return ok && alg != signer.ES256K
		}
		return slices.ContainsFunc(p.Sets, IsDefault)
	}
	return in(next) && (cur == nil || !in(cur))
}

// SetsOf returns the JWK Sets key k is published in (qualified): those
// its policy names, else its namespace's DefaultSet (none for an ES256K
// key, which joins only sets that opted in to them).
func SetsOf(k *keyring.Key) []string {
	if p := PolicyOf(k); len(p.Sets) > 0 {
		return p.Sets
	}
	if k.Algorithm == signer.ES256K {
		return nil
	}
	return []string{DefaultSetIn(namespace.Of(k.ID))}
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
	return map[string]authz.Op{
		sigilv1.JWTService_SignJWT_FullMethodName:      OpSign,
		sigilv1.JWTService_SignJWTBatch_FullMethodName: OpSign, // admitted on the namespace; each item decided as a SignJWT
		sigilv1.JWTService_CreateJWKSet_FullMethodName: OpSetsAdmin,
		sigilv1.JWTService_UpdateJWKSet_FullMethodName: OpSetsAdmin,
		sigilv1.JWTService_DeleteJWKSet_FullMethodName: OpSetsAdmin,
		sigilv1.JWTService_ListJWKSets_FullMethodName:  authz.KeysRead,
	}
}

// KeylessMethods are the JWK Set methods, which name sets, not keys.
func (Purpose) KeylessMethods() []string {
	return []string{sigilv1.JWTService_CreateJWKSet_FullMethodName, sigilv1.JWTService_UpdateJWKSet_FullMethodName,
		sigilv1.JWTService_DeleteJWKSet_FullMethodName, sigilv1.JWTService_ListJWKSets_FullMethodName}
}

// BatchMethods: SignJWTBatch, whose items are each a SignJWT of their own.
func (Purpose) BatchMethods() []string {
	return []string{sigilv1.JWTService_SignJWTBatch_FullMethodName}
}

// Empty implements purpose.NamespaceHolder: a namespace holding a JWK Set
// is not empty.
func (Purpose) Empty(ctx context.Context, d purpose.Deps, ns string) error {
	sets, err := Sets{d.Anchors}.ListIn(ctx, ns)
	if err != nil {
		return err
	}
	if len(sets) > 1 {
		return errs.New(errs.FailedPrecondition, "namespace %q holds JWK Sets (%s first); delete them first", ns, namespace.Local(sets[1].Name))
	}
	return nil
}

// Payload is the claims to sign.
func (Purpose) Payload(req any) []byte {
	if r, ok := req.(*sigilv1.SignJWTRequest); ok {
		return r.GetClaimsJson()
	}
	return nil
}

// RequestedPolicy reads jwt_policy; unset durations and sets stay zero
// ("keep" or "default").
func (Purpose) RequestedPolicy(req purpose.PolicyRequest) (any, error) {
	p := req.GetJwtPolicy()
	if p == nil {
		return nil, nil
	}
	return &Policy{Schedule: keyring.Schedule{RotateEvery: p.GetRotateEvery().AsDuration(), PublishAhead: p.GetPublishAhead().AsDuration(),
		MaxTokenTTL: p.GetMaxTokenTtl().AsDuration(), Skew: p.GetSkew().AsDuration()}, Sets: p.GetJwksSets()}, nil
}

// Describe sets jwt_policy, with the JWKS max-age the schedule allows.
func (Purpose) Describe(k *keyring.Key, out *sigilv1.Key) {
	p := PolicyOf(k)
	out.JwtPolicy = &sigilv1.JWTPolicy{RotateEvery: durationpb.New(p.RotateEvery), PublishAhead: durationpb.New(p.PublishAhead),
		MaxTokenTtl: durationpb.New(p.MaxTokenTTL), Skew: durationpb.New(p.Skew), JwksMaxAge: durationpb.New(p.MaxAge()), JwksSets: SetsOf(k)}
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
// SignJWTBatch signs each item as SignJWT would, through the batch layer,
// and answers each item's token or error in its place.
func (s *service) SignJWTBatch(ctx context.Context, req *sigilv1.SignJWTBatchRequest) (*sigilv1.SignJWTBatchResponse, error) {
	resps, failed, err := purpose.Batch(ctx, s.d, sigilv1.JWTService_SignJWT_FullMethodName, req.GetItems(), func() *sigilv1.SignJWTResponse { return &sigilv1.SignJWTResponse{} })
	if err != nil {
		return nil, err
	}
	out := &sigilv1.SignJWTBatchResponse{Results: make([]*sigilv1.SignJWTBatchResult, len(resps))}
	for i, r := range resps {
		if failed[i] != nil {
			out.Results[i] = &sigilv1.SignJWTBatchResult{Result: &sigilv1.SignJWTBatchResult_Error{Error: failed[i]}}
			continue
		}
		out.Results[i] = &sigilv1.SignJWTBatchResult{Result: &sigilv1.SignJWTBatchResult_Response{Response: r}}
	}
	return out, nil
}

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
	if err := s.d.Sign(ctx, sg, func(ctx context.Context) (err error) { tok, err = Sign(ctx, sg, p); return err }); err != nil {
		return nil, err
	}
	return &sigilv1.SignJWTResponse{Token: tok.Compact, Kid: tok.KID, Generation: int32(tok.Generation),
		IssueTime: timestamppb.New(tok.IssuedAt), ExpireTime: timestamppb.New(tok.Expiry)}, nil
}

// CreateJWKSet makes a named set. Followers of the keyring (the JWKS) are
// told at once; other replicas serve it on their next rebuild.
//
// The caller's jwks.admin rule must cover the set's name (as a key ID) and
// every pattern it admits: an admin of "tenant-a-*" keys cannot name a set
// after another issuer nor admit keys beyond its own. An admin whose rule
// does not cover every key is also held to MaxSetsPerCreator.
func (s *service) CreateJWKSet(ctx context.Context, req *sigilv1.CreateJWKSetRequest) (*sigilv1.CreateJWKSetResponse, error) {
	patterns := EffectivePatterns(req.GetName(), req.GetKeyPatterns())
	if err := mayCreateSet(ctx, s.d, req.GetName(), patterns); err != nil {
		return nil, err
	}
	who, _ := s.d.Covers(ctx, OpSetsAdmin, append([]string{req.GetName()}, patterns...))
	_, everything := s.d.Covers(ctx, OpSetsAdmin, []string{namespace.Qualify(namespace.Of(req.GetName()), "*")})
	set, err := Sets{s.d.Anchors}.Create(ctx, req.GetName(), req.GetAllowEs256K(), patterns, Creator{Identity: who, Scoped: !everything}, s.d.Clock())
	if err != nil {
		return nil, err
	}
	s.d.Keys.Changed()
	return &sigilv1.CreateJWKSetResponse{Set: s.describeSet(ctx, set)}, nil
}

// mayCreateSet refuses a set whose name or key patterns reach beyond the
// keys the caller's jwks.admin rule names.
func mayCreateSet(ctx context.Context, d purpose.Deps, name string, patterns []string) error {
	if err := checkSetNames([]string{name}); err != nil {
		return err
	}
	if _, ok := d.Covers(ctx, OpSetsAdmin, append([]string{name}, patterns...)); !ok {
		return errs.New(errs.PermissionDenied, "permission denied: the set's name and every key pattern it admits must be within the keys your jwks.admin rule names")
	}
	return nil
}

// UpdateJWKSet replaces a set's key patterns: the caller's jwks.admin
// rule must cover the set's name, its old and its new patterns, and every
// key in the set must stay admitted.
func (s *service) UpdateJWKSet(ctx context.Context, req *sigilv1.UpdateJWKSetRequest) (*sigilv1.UpdateJWKSetResponse, error) {
	name := req.GetName()
	if err := mayCreateSet(ctx, s.d, name, req.GetKeyPatterns()); err != nil {
		return nil, err
	}
	set, err := Sets{s.d.Anchors}.Update(ctx, name, req.GetKeyPatterns(), func(old []string) error { return mayCreateSet(ctx, s.d, name, old) },
		func() []string { return s.members(ctx, name) })
	if err != nil {
		return nil, err
	}
	s.d.Keys.Changed()
	return &sigilv1.UpdateJWKSetResponse{Set: s.describeSet(ctx, set)}, nil
}

// DeleteJWKSet deletes a set no key is in; the caller's jwks.admin rule
// must cover its name and patterns.
func (s *service) DeleteJWKSet(ctx context.Context, req *sigilv1.DeleteJWKSetRequest) (*sigilv1.DeleteJWKSetResponse, error) {
	name := req.GetName()
	err := Sets{s.d.Anchors}.Delete(ctx, name, func(patterns []string) error { return mayCreateSet(ctx, s.d, name, patterns) },
		func() []string { return s.members(ctx, name) })
	if err != nil {
		return nil, err
	}
	s.d.Keys.Changed()
	return &sigilv1.DeleteJWKSetResponse{}, nil
}

// members are the keys (not deleted) whose policy puts them in set name.
func (s *service) members(ctx context.Context, name string) []string {
	var ids []string
	s.d.Keys.Select(ctx, func(k *keyring.Key) bool { // nothing copied
		if k.Purpose == Name && !k.Deleted && slices.Contains(SetsOf(k), name) {
			ids = append(ids, k.ID)
		}
		return false
	})
	slices.Sort(ids)
	return ids
}

// ListJWKSets lists the sets of the namespace the call is made in, with
// their members.
func (s *service) ListJWKSets(ctx context.Context, _ *sigilv1.ListJWKSetsRequest) (*sigilv1.ListJWKSetsResponse, error) {
	sets, err := Sets{s.d.Anchors}.ListIn(ctx, namespace.FromContext(ctx))
	if sets == nil {
		return nil, err
	}
	resp := &sigilv1.ListJWKSetsResponse{}
	for _, set := range sets {
		resp.Sets = append(resp.Sets, s.describeSet(ctx, set))
	}
	return resp, nil
}

func (s *service) describeSet(ctx context.Context, set Set) *sigilv1.JWKSet {
	out := &sigilv1.JWKSet{Name: set.Name, AllowEs256K: set.AllowES256K, Path: SetPath(set.Name), KeyPatterns: set.KeyPatterns}
	var ids []string
	s.d.Keys.Select(ctx, func(k *keyring.Key) bool { // nothing copied; the policy is asked outside the keyring's lock
		if k.Purpose == Name && slices.Contains(SetsOf(k), set.Name) {
			ids = append(ids, k.ID)
		}
		return false
	})
	slices.Sort(ids)
	for _, id := range ids {
		if s.d.Visible(ctx, id) {
			out.KeyIds = append(out.KeyIds, id)
		}
	}
	return out
}

// SetPath is where set name is served.
func SetPath(name string) string { return "/jwks/" + name + ".json" }
