package server

import (
	"cmp"
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/signer"
)

// keyService implements sigil.v1.KeyService over the keyring; each
// key's purpose reads and describes its policy.
type keyService struct {
	sigilv1.UnimplementedKeyServiceServer
	keys     *keyring.Keyring
	purposes []purpose.Purpose
	visible  func(ctx context.Context, id string) bool // the caller may read key id
	deps     purpose.Deps                              // for the purposes' scope checks
}

var _ sigilv1.KeyServiceServer = (*keyService)(nil)

// defaultPurpose is a CreateKey request's purpose when it names none.
const defaultPurpose = "raw"

func (s *keyService) CreateKey(ctx context.Context, req *sigilv1.CreateKeyRequest) (*sigilv1.CreateKeyResponse, error) {
	name, policy, err := s.createPolicy(req)
	if err != nil {
		return nil, err
	}
	if err := s.checkScope(ctx, name, req.GetId(), signer.Algorithm(req.GetAlgorithm()), nil, policy); err != nil {
		return nil, err
	}
	if err := s.withinNamespace(ctx, req.GetId()); err != nil {
		return nil, err
	}
	spec := keyring.CreateSpec{
		ID: req.GetId(), Purpose: name, Algorithm: signer.Algorithm(req.GetAlgorithm()), Policy: policy,
		RSABits: int(req.GetRsaBits()), Backend: req.GetBackend(), RequestID: req.GetRequestId(),
		Labels: req.GetLabels(), Owner: req.GetOwner(), Description: req.GetDescription(),
	}
	var k *keyring.Key
	switch {
	case req.GetAdoptUri() != "" && req.GetImported() != nil:
		return nil, errs.New(errs.InvalidArgument, "adopt_uri and imported: a key is adopted or imported, not both")
	case req.GetAdoptUri() != "":
		k, err = s.keys.Adopt(ctx, spec, req.GetAdoptUri())
	case req.GetImported() != nil:
		var in keyring.ImportSpec
		if in, err = importSpec(req.GetImported()); err == nil {
			k, err = s.importKey(ctx, spec, in)
		}
	default:
		k, err = s.keys.Create(ctx, spec)
	}
	if err != nil {
		return nil, err
	}
	pk, err := s.keyToProto(k)
	return &sigilv1.CreateKeyResponse{Key: pk}, err
}

// importKey imports a key. A new key of a purpose whose ledger a
// restore fences (eth: nonces) is fenced the same way first: the pair
// had a life elsewhere, and what it signed there (its nonces) is unknown
// until reconciled from a node. The fence is written before the key,
// so no crash leaves the key signing unfenced; a failed import lifts a
// fence it wrote on a key that does not exist.
func (s *keyService) importKey(ctx context.Context, spec keyring.CreateSpec, in keyring.ImportSpec) (*keyring.Key, error) {
	p, err := s.purpose(spec.Purpose)
	if err != nil {
		return nil, err
	}
	f, fenced := p.(purpose.Fenced)
	if _, err := s.keys.Get(ctx, spec.ID); err == nil || !fenced { // a generation of a key that exists, or nothing to fence
		return s.keys.Import(ctx, spec, in)
	}
	if s.deps.Ledger == nil {
		return nil, errs.New(errs.FailedPrecondition, "key %q: this keyring store keeps no ledger, so an imported %s key cannot be fenced", spec.ID, spec.Purpose)
	}
	wrote := false
	err = s.deps.Ledger.UpdateLedger(ctx, spec.ID, func(r *keyring.LedgerRecord) error {
		if r.Fence == nil {
			r.Fence, wrote = &keyring.Fence{Reason: "imported: what the key signed before is unknown; " + f.Reconcile(namespace.Local(spec.ID)) + " --upstream URL"}, true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	k, err := s.keys.Import(ctx, spec, in)
	if err != nil && wrote {
		if _, gerr := s.keys.Get(ctx, spec.ID); errs.Is(gerr, errs.NotFound) {
			_ = s.deps.Ledger.UpdateLedger(context.WithoutCancel(ctx), spec.ID, func(r *keyring.LedgerRecord) error {
				r.Fence = nil
				return nil
			})
		}
	}
	return k, err
}

// maxWrappedKey bounds an imported key's wrapped bytes: an RSA-3072
// private key's PKCS#8, wrapped, is under 2 KiB.
const maxWrappedKey = 16 << 10

// importSpec reads an ImportedKey.
func importSpec(in *sigilv1.ImportedKey) (keyring.ImportSpec, error) {
	if n := len(in.GetWrappedKey()); n == 0 || n > maxWrappedKey {
		return keyring.ImportSpec{}, errs.New(errs.InvalidArgument, "imported.wrapped_key: 1 to %d bytes, got %d", maxWrappedKey, n)
	}
	if t := in.GetImportToken(); t == "" || len(t) > 128 {
		return keyring.ImportSpec{}, errs.New(errs.InvalidArgument, "imported.import_token: the token GetImportParameters answered")
	}
	pub, err := signer.ParsePublicKey(in.GetPublicKey())
	if err != nil {
		return keyring.ImportSpec{}, errs.New(errs.InvalidArgument, "imported.public_key: %v", err)
	}
	return keyring.ImportSpec{Token: in.GetImportToken(), Wrapped: in.GetWrappedKey(), Public: pub}, nil
}

func (s *keyService) GetImportParameters(ctx context.Context, req *sigilv1.GetImportParametersRequest) (*sigilv1.GetImportParametersResponse, error) {
	p, err := s.keys.NewImportParams(ctx, req.GetId(), signer.Algorithm(req.GetAlgorithm()), int(req.GetRsaBits()), req.GetBackend())
	if err != nil {
		return nil, err
	}
	pem, err := signer.PublicKeyPEM(p.Public)
	if err != nil {
		return nil, err
	}
	return &sigilv1.GetImportParametersResponse{WrappingPublicKeyPem: pem, WrappingAlgorithm: p.Wrapping.Name(), OaepHash: cmp.Or(p.Wrapping.OAEPHash, "sha256"),
		ImportToken: p.Token, ExpireTime: timestamppb.New(p.Expires)}, nil
}

// withinNamespace refuses a key beyond namespace.MaxKeys in a namespace
// other than root, so one tenant cannot fill the keyring every tenant
// shares. Counted before the creation: racing creations may pass it by
// as many as race.
func (s *keyService) withinNamespace(ctx context.Context, id string) error {
	ns := namespace.Of(id)
	if ns == namespace.Root {
		return nil
	}
	n := len(s.keys.Select(ctx, func(k *keyring.Key) bool { return namespace.Of(k.ID) == ns && k.ID != id }))
	if n >= namespace.MaxKeys {
		return errs.New(errs.ResourceExhausted, "namespace %q holds %d keys, the most a namespace may hold", ns, n)
	}
	return nil
}

// createPolicy is the purpose a CreateKey request names and the policy it
// carries for it.
func (s *keyService) createPolicy(req *sigilv1.CreateKeyRequest) (string, any, error) {
	name := cmp.Or(req.GetPurpose(), defaultPurpose)
	p, err := s.purpose(name)
	if err != nil {
		return "", nil, err
	}
	policy, err := s.requestedPolicy(req, p, errs.InvalidArgument)
	return name, policy, err
}

// checkScope asks purpose name, if it can tell, whether the caller may
// give key id the policy next (what its purpose makes of the one asked
// for) over cur (nil for a new key).
func (s *keyService) checkScope(ctx context.Context, name, id string, alg signer.Algorithm, cur, next any) error {
	p, err := s.purpose(name)
	if err != nil {
		return err
	}
	sc, ok := p.(purpose.Scoped)
	if !ok {
		return nil
	}
	if cur == nil { // a new key: its policy as the purpose completes it
		if next, err = p.NewPolicy(next); err != nil {
			return err
		}
	}
	return sc.CheckScope(ctx, s.deps, id, alg, cur, next)
}

// purpose returns the purpose a client named.
func (s *keyService) purpose(name string) (purpose.Purpose, error) {
	for _, p := range s.purposes {
		if p.Name() == name {
			return p, nil
		}
	}
	return nil, errs.New(errs.InvalidArgument, "unknown purpose %q (known: %v)", name, keyring.PurposeNames())
}

// requestedPolicy is the policy req carries for purpose p (nil if none).
// Only p reads the generic policy field, and it must take what is there;
// a policy in another purpose's own field is refused with the kind
// mismatch (InvalidArgument for a new key, FailedPrecondition for an
// existing key of another purpose).
func (s *keyService) requestedPolicy(req purpose.PolicyRequest, p purpose.Purpose, mismatch errs.Kind) (any, error) {
	policy, err := p.RequestedPolicy(req)
	if err != nil {
		return nil, err
	}
	if req.GetPolicy() != nil {
		if got, err := p.RequestedPolicy(onlyAny{req.GetPolicy()}); err != nil || got == nil {
			return nil, errs.New(errs.InvalidArgument, "policy: %s is not a policy of purpose %s", req.GetPolicy().GetTypeUrl(), p.Name())
		}
	}
	var claimants []string
	for _, q := range s.purposes {
		if got, err := q.RequestedPolicy(withoutAny{req}); err == nil && got != nil {
			claimants = append(claimants, q.Name())
		}
	}
	switch {
	case len(claimants) > 1:
		return nil, errs.New(errs.InvalidArgument, "send one policy, not %d (%v)", len(claimants), claimants)
	case len(claimants) == 1 && claimants[0] != p.Name():
		return nil, errs.New(mismatch, "the policy sent applies to %s keys only, not %s", claimants[0], p.Name())
	}
	return policy, nil
}

// onlyAny is a request's generic policy field alone, and withoutAny the
// request without it: the views the purposes are asked about.
type (
	onlyAny    struct{ policy *anypb.Any }
	withoutAny struct{ purpose.PolicyRequest }
)

func (onlyAny) GetJwtPolicy() *sigilv1.JWTPolicy { return nil }
func (onlyAny) GetEthPolicy() *sigilv1.EthPolicy { return nil }
func (o onlyAny) GetPolicy() *anypb.Any          { return o.policy }
func (withoutAny) GetPolicy() *anypb.Any         { return nil }

func (s *keyService) GetKey(ctx context.Context, req *sigilv1.GetKeyRequest) (*sigilv1.GetKeyResponse, error) {
	k, err := s.keys.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	pk, err := s.keyToProto(k)
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
	// The filter runs over the keyring's own records (nothing copied), the
	// policy over the IDs that pass it, and only the page's keys are
	// copied and encoded: a page of ten thousand keys costs their IDs.
	var ids []string
	ns := namespace.FromContext(ctx)
	s.keys.Select(ctx, func(k *keyring.Key) bool {
		if namespace.Of(k.ID) == ns && match(k) {
			ids = append(ids, k.ID)
		}
		return false
	})
	slices.Sort(ids)
	resp := &sigilv1.ListKeysResponse{}
	var page []string
	for _, id := range ids {
		if !s.visible(ctx, id) {
			continue
		}
		resp.TotalSize++
		switch {
		case id <= after:
		case len(page) == size:
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(page[size-1])) // counted, not sent
		default:
			page = append(page, id)
		}
	}
	for _, id := range page {
		k, err := s.keys.Get(ctx, id)
		if err != nil {
			continue // gone since it was counted
		}
		pk, err := s.keyToProto(k)
		if err != nil {
			return nil, err
		}
		resp.Keys = append(resp.Keys, pk)
	}
	return resp, nil
}

// keyFilter is the ListKeys request's purpose and state filter.
func keyFilter(req *sigilv1.ListKeysRequest) (func(*keyring.Key) bool, error) {
	purpose, state := req.GetPurpose(), keyring.State(req.GetState())
	if _, err := keyring.LookupPurpose(purpose); err != nil && purpose != "" && purpose != keyring.PurposeAudit {
		return nil, err
	}
	if state != "" && !slices.Contains(keyring.States, state) {
		return nil, errs.New(errs.InvalidArgument, "state: %q is not one of %v", state, keyring.States)
	}
	if len(req.GetLabels()) > keyring.MaxLabels {
		return nil, errs.New(errs.InvalidArgument, "labels: at most %d filters", keyring.MaxLabels)
	}
	for _, l := range req.GetLabels() {
		name, value, _ := strings.Cut(l, "=")
		if keyring.CheckLabels(map[string]string{name: value}) != nil {
			return nil, errs.New(errs.InvalidArgument, "labels: %q is not K=V or K", l)
		}
	}
	owner := req.GetOwner()
	if len(owner) > 128 {
		return nil, errs.New(errs.InvalidArgument, "owner: at most 128 bytes")
	}
	return func(k *keyring.Key) bool {
		return (purpose == "" || k.Purpose == purpose) && k.HasLabels(req.GetLabels()) && (owner == "" || k.Owner == owner) &&
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
	if err != nil || (len(after) > 0 && keyring.ValidateName(string(after)) != nil) {
		return 0, "", errs.New(errs.InvalidArgument, "page_token: not one ListKeys gave")
	}
	return size, string(after), nil
}

func (s *keyService) GetPublicKey(ctx context.Context, req *sigilv1.GetPublicKeyRequest) (*sigilv1.GetPublicKeyResponse, error) {
	k, err := s.keys.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	g, err := k.Find(int(req.GetGeneration()), req.GetKid())
	if err != nil {
		return nil, err
	}
	pem, err := signer.PublicKeyPEM(g.Public())
	if err != nil {
		return nil, err
	}
	return &sigilv1.GetPublicKeyResponse{Generation: int32(g.Number), Kid: g.KID(), PublicKeyPem: pem, PublicKeyDer: g.PublicKey}, nil
}

// UpdateKeyPolicy replaces a key's policy with the one the request
// carries, which its purpose must take.
func (s *keyService) UpdateKeyPolicy(ctx context.Context, req *sigilv1.UpdateKeyPolicyRequest) (*sigilv1.UpdateKeyPolicyResponse, error) {
	cur, p, policy, err := s.requestedUpdate(ctx, req)
	if err != nil {
		return nil, err
	}
	alg := cur.Algorithm
	scope := func(cur, next any) error { return s.checkScope(ctx, p.Name(), req.GetId(), alg, cur, next) }
	k, err := s.keys.SetPolicy(ctx, req.GetId(), p.Name(), policy, append(loosenCheck(ctx, req.GetId(), p), scope)...)
	if err != nil {
		return nil, err
	}
	pk, err := s.keyToProto(k)
	return &sigilv1.UpdateKeyPolicyResponse{Key: pk}, err
}

// requestedUpdate is the key an UpdateKeyPolicy request names, its
// purpose, and the policy the request carries.
func (s *keyService) requestedUpdate(ctx context.Context, req *sigilv1.UpdateKeyPolicyRequest) (*keyring.Key, purpose.Purpose, any, error) {
	k, err := s.keys.Get(ctx, req.GetId())
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := s.purpose(k.Purpose)
	if err != nil {
		return nil, nil, nil, errs.New(errs.FailedPrecondition, "key %q has purpose %s, whose policy cannot be changed", k.ID, k.Purpose)
	}
	policy, err := s.requestedPolicy(req, p, errs.FailedPrecondition)
	if err != nil {
		return nil, nil, nil, err
	}
	if policy == nil {
		return nil, nil, nil, errs.New(errs.InvalidArgument, "policy: missing (a %s key's policy)", p.Name())
	}
	return k, p, policy, nil
}

func (s *keyService) RotateKey(ctx context.Context, req *sigilv1.RotateKeyRequest) (*sigilv1.RotateKeyResponse, error) {
	k, err := s.keys.Rotate(ctx, req.GetId(), req.GetImmediate())
	if err != nil {
		return nil, err
	}
	pk, err := s.keyToProto(k)
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
	pk, err := s.keyToProto(k)
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

func (s *keyService) ScheduleKeyDeletion(ctx context.Context, req *sigilv1.ScheduleKeyDeletionRequest) (*sigilv1.ScheduleKeyDeletionResponse, error) {
	k, err := s.keys.ScheduleDeletion(ctx, req.GetId(), req.GetWindow().AsDuration())
	if err != nil {
		return nil, err
	}
	pk, err := s.keyToProto(k)
	return &sigilv1.ScheduleKeyDeletionResponse{Key: pk}, err
}

func (s *keyService) CancelKeyDeletion(ctx context.Context, req *sigilv1.CancelKeyDeletionRequest) (*sigilv1.CancelKeyDeletionResponse, error) {
	k, err := s.keys.CancelDeletion(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	pk, err := s.keyToProto(k)
	return &sigilv1.CancelKeyDeletionResponse{Key: pk}, err
}

func (s *keyService) UpdateKeyMetadata(ctx context.Context, req *sigilv1.UpdateKeyMetadataRequest) (*sigilv1.UpdateKeyMetadataResponse, error) {
	if len(req.GetRemoveLabels()) > keyring.MaxLabels {
		return nil, errs.New(errs.InvalidArgument, "remove_labels: at most %d", keyring.MaxLabels)
	}
	k, err := s.keys.SetMetadata(ctx, req.GetId(), keyring.Metadata{SetLabels: req.GetSetLabels(), RemoveLabels: req.GetRemoveLabels(),
		Owner: req.Owner, Description: req.Description})
	if err != nil {
		return nil, err
	}
	pk, err := s.keyToProto(k)
	return &sigilv1.UpdateKeyMetadataResponse{Key: pk}, err
}

func (s *keyService) setDisabled(ctx context.Context, id string, disabled bool) (*sigilv1.Key, error) {
	k, err := s.keys.SetDisabled(ctx, id, disabled)
	if err != nil {
		return nil, err
	}
	return s.keyToProto(k)
}

// timeOrNil keeps unset times out of responses.
func timeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// keyToProto describes k; its purpose adds its policy and attributes.
func (s *keyService) keyToProto(k *keyring.Key) (*sigilv1.Key, error) {
	pk := &sigilv1.Key{
		Id: k.ID, Namespace: namespace.Of(k.ID), Algorithm: string(k.Algorithm), Purpose: k.Purpose, Backend: k.Backend, Origin: cmp.Or(k.Origin, keyring.OriginGenerated),
		RsaBits: int32(k.RSABits), CreateTime: timestamppb.New(k.CreatedAt), Disabled: k.Disabled,
		DeleteTime: timeOrNil(k.DeleteAt), Deleted: k.Deleted, Labels: k.Labels, Owner: k.Owner, Description: k.Description,
	}
	for _, p := range s.purposes {
		if p.Name() == k.Purpose {
			p.Describe(k, pk)
		}
	}
	if publish, activate, ok := k.NextRotation(); ok {
		pk.NextPublishTime, pk.NextActivateTime = timeOrNil(publish), timestamppb.New(activate)
	}
	for i := range k.Generations {
		g := &k.Generations[i]
		if g.State == keyring.StateCreating {
			continue
		}
		pg := &sigilv1.Generation{Generation: int32(g.Number), State: string(g.State), Kid: g.KID(), BackendRef: g.Ref,
			CreateTime: timestamppb.New(g.CreatedAt), UnpublishTime: timeOrNil(g.UnpublishAt), Origin: g.Origin,
			PublishTime: timeOrNil(g.PublishedAt), ActivatedTime: timeOrNil(g.ActivatedAt), RetiringTime: timeOrNil(g.RetiringAt),
			RetiredTime: timeOrNil(g.RetiredAt), RevokeTime: timeOrNil(g.RevokedAt), DestroyTime: timeOrNil(g.DestroyAt)}
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
