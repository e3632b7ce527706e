package keyring

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// The origins of a key's pair (Key.Origin).
const (
	OriginGenerated = "generated"
	OriginAdopted   = "adopted"
)

// Adopt makes key s.ID of the key pair uri names in s's backend, made by
// another tool: the backend checks the private key never leaves it and
// may sign; the algorithm is the public key's (s.Algorithm, if given,
// must be it). The key's one generation is active at once, its origin
// adopted. Its objects are the key's from then on: revoking or deleting
// the key destroys them in time, as a generated key's.
func (r *Keyring) Adopt(ctx context.Context, s CreateSpec, uri string) (*Key, error) {
	if s.Backend == "" {
		s.Backend = r.defaultBackend
	}
	b, ok := r.backends[s.Backend].(signer.Adopter)
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "backend %q cannot adopt a key pair", s.Backend)
	}
	name, ref, pub, err := b.Adopt(ctx, uri)
	if err != nil {
		return nil, err
	}
	alg, err := algorithmOf(pub, s.Algorithm)
	if err != nil {
		return nil, err
	}
	if s.Algorithm != "" && s.Algorithm != alg {
		return nil, errs.New(errs.InvalidArgument, "the key pair is %s, not %s", alg, s.Algorithm)
	}
	s.Algorithm = alg
	if err := r.validate(ctx, &s); err != nil {
		return nil, err
	}
	for _, k := range r.List(ctx) { // one pair, one key: never two records over the same objects
		for _, g := range k.Generations {
			if g.Ref == ref {
				return nil, errs.New(errs.AlreadyExists, "the key pair is key %q's already", k.ID)
			}
		}
	}
	if err := r.claimPair(ctx, ref, s.ID); err != nil {
		return nil, err
	}
	release, err := r.claimPublic(ctx, pub, s.ID)
	if err != nil {
		return nil, err
	}
	der, err := signer.MarshalPublicKey(pub)
	if err != nil {
		return nil, err
	}
	now := r.now().UTC()
	k := &Key{ID: s.ID, Purpose: s.Purpose, Algorithm: s.Algorithm, RSABits: s.RSABits, Backend: s.Backend, Origin: OriginAdopted,
		RequestID: s.RequestID, Labels: s.Labels, Owner: s.Owner, Description: s.Description, CreatedAt: now, UpdatedAt: now,
		Generations:    []Generation{{Number: 1, State: StateActive, Name: name, Ref: ref, PublicKey: der, CreatedAt: now, UpdatedAt: now, PublishedAt: now, ActivatedAt: now}},
		LastGeneration: 1}
	if k.RSABits == 0 && alg.IsRSA() {
		k.RSABits = rsaBits(pub)
	}
	if err := k.setPolicy(s.Policy); err != nil {
		return nil, err
	}
	if err := k.derive(); err != nil {
		return nil, err
	}
	rev, err := r.store.Put(ctx, k)
	if err != nil {
		release()
		return nil, err
	}
	k.Revision = rev
	if err := r.remember(k); err != nil {
		return nil, err
	}
	return r.current(k.ID)
}

// claimPair takes the pair at ref for key id in one atomic step, an
// anchor naming the pair: of two adoptions of one pair racing under two
// IDs, one wins (a check of the keys before writing would let both
// through). A retry of the same ID finds its own claim; a claim left by
// an adoption that never wrote its key stands until adopted under its ID.
func (r *Keyring) claimPair(ctx context.Context, ref, id string) error {
	a, ok := r.store.(Anchors)
	if !ok {
		return errs.New(errs.FailedPrecondition, "this keyring store cannot record an adoption")
	}
	sum := sha256.Sum256([]byte(ref))
	return a.UpdateAnchor(ctx, "keyring/adopted/"+hex.EncodeToString(sum[:]), func(old []byte) ([]byte, error) {
		if old != nil && string(old) != id {
			return nil, errs.New(errs.AlreadyExists, "the key pair is claimed by key %q (if that adoption did not finish, adopt it as %q)", old, old)
		}
		return []byte(id), nil
	})
}
