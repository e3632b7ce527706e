package keyring

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"path"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// RecoverSpec says which key records to rebuild from a backend alone,
// when the store that named its objects is lost and no backup exists.
type RecoverSpec struct {
	Backend  string
	Purpose  string   // the purpose the keys had: the token does not hold it
	Patterns []string // the key IDs to recover (path.Match globs)
	// Algorithm is the one RSA keys sign with (RS256 or PS256: the key
	// pair does not say); others are read from the public key.
	Algorithm signer.Algorithm
}

// label is how a generation's objects are labelled: ID.gN.
var label = regexp.MustCompile(`^(.+)\.g([1-9][0-9]{0,8})$`)

// PlanRecovery lists the key pairs Sigil made in backend b whose labels
// (ID.gN) name a key matching spec's patterns, and returns the records
// they rebuild: the newest generation active, older ones retired (they
// verify, they do not sign); the algorithm, and what the purpose derives
// (an address, a kid), from the public keys; no policy (the purpose's
// default, or none: an eth key allows no chain until its policy is set).
// Sigil's audit key, sigil.audit, is always recovered with its purpose.
func PlanRecovery(ctx context.Context, b signer.Backend, spec RecoverSpec, now time.Time) ([]*Key, error) {
	lister, ok := b.(signer.KeyLister)
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "backend %q cannot list its keys, so records cannot be rebuilt from it", spec.Backend)
	}
	if _, ok := purposes.m[spec.Purpose]; !ok {
		return nil, errs.New(errs.InvalidArgument, "unknown purpose %q", spec.Purpose)
	}
	listed, err := lister.ListKeys(ctx, nil) // every keyring's: the lost store held the owner mark
	if err != nil {
		return nil, err
	}
	keys := map[string]*Key{}
	for _, l := range listed {
		m := label.FindStringSubmatch(l.Name)
		if m == nil {
			continue
		}
		id, n := m[1], 0
		n, _ = strconv.Atoi(m[2])
		p := spec.Purpose
		if id == AuditKeyID {
			p = PurposeAudit
		} else if !matchesAny(spec.Patterns, id) || ValidateName(id) != nil {
			continue
		}
		pub, err := b.Public(ctx, l.Ref)
		if err != nil {
			return nil, err
		}
		der, err := signer.MarshalPublicKey(pub)
		if err != nil {
			return nil, err
		}
		alg, err := algorithmOf(pub, spec.Algorithm)
		if err != nil {
			return nil, errs.New(errs.InvalidArgument, "%s: %v", l.Name, err)
		}
		k := keys[id]
		if k == nil {
			k = &Key{ID: id, Purpose: p, Algorithm: alg, Backend: spec.Backend, CreatedAt: now, UpdatedAt: now}
			keys[id] = k
		}
		if k.Algorithm != alg {
			return nil, errs.New(errs.FailedPrecondition, "%s: generations of %q have different algorithms (%s, %s)", l.Name, id, k.Algorithm, alg)
		}
		for _, g := range k.Generations {
			if g.Number == n {
				return nil, errs.New(errs.FailedPrecondition, "%s: the token holds two key pairs of that name (another Sigil's keyring shares the token?): nothing is recovered; recover from a backup, or remove the other's objects", l.Name)
			}
		}
		// A secp256k1 key recovered as anything but eth would sign any
		// digest, past the nonce guard and the spending policy.
		if alg == signer.ES256K && p != "eth" {
			return nil, errs.New(errs.InvalidArgument, "%s is a secp256k1 key: recover it with --purpose eth, which fences it until reconciled", l.Name)
		}
		if pp, ok := purposes.m[p]; !ok || pp.CheckAlgorithm(alg) != nil {
			return nil, errs.New(errs.InvalidArgument, "%s: purpose %s does not sign with %s", l.Name, p, alg)
		}
		k.Generations = append(k.Generations, Generation{Number: n, Name: l.Name, Ref: l.Ref, PublicKey: der, CreatedAt: now, UpdatedAt: now})
	}
	out := make([]*Key, 0, len(keys))
	for _, k := range keys {
		sort.Slice(k.Generations, func(i, j int) bool { return k.Generations[i].Number < k.Generations[j].Number })
		for i := range k.Generations {
			g := &k.Generations[i]
			g.State, g.RetiredAt = StateRetired, now
			if i == len(k.Generations)-1 {
				g.State, g.RetiredAt, g.ActivatedAt, g.PublishedAt = StateActive, time.Time{}, now, now
			}
			if k.Algorithm.IsRSA() {
				if p, err := signer.ParsePublicKey(k.Generations[i].PublicKey); err == nil {
					k.RSABits = rsaBits(p)
				}
			}
		}
		k.LastGeneration = k.Generations[len(k.Generations)-1].Number
		if err := k.derive(); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// derive fills what a record holds beside its generations: the parsed
// public keys and kids, and the purpose's attributes of the newest.
func (k *Key) derive() error {
	for i := range k.Generations {
		g := &k.Generations[i]
		pub, err := signer.ParsePublicKey(g.PublicKey)
		if err != nil {
			return err
		}
		g.public = pub
		if g.kid, err = signer.Thumbprint(pub); err != nil {
			return err
		}
	}
	p, ok := purposeOf(k)
	if !ok {
		return errs.New(errs.InvalidArgument, "unknown purpose %q", k.Purpose)
	}
	attrs, err := p.Attributes(k.Generations[len(k.Generations)-1].public)
	k.Attributes = attrs
	return err
}

// algorithmOf is the algorithm a public key signs with; RSA's is rsaAlg
// (RS256 if unset).
func algorithmOf(pub any, rsaAlg signer.Algorithm) (signer.Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch {
		case k.Curve == elliptic.P256():
			return signer.ES256, nil
		case k.Curve == elliptic.P384():
			return signer.ES384, nil
		case signer.IsSecp256k1(k):
			return signer.ES256K, nil
		}
	case ed25519.PublicKey:
		return signer.EdDSA, nil
	case *rsa.PublicKey:
		if rsaAlg == signer.PS256 {
			return signer.PS256, nil
		}
		return signer.RS256, nil
	}
	return "", errs.New(errs.InvalidArgument, "a public key of type %T", pub)
}

func matchesAny(patterns []string, id string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, id); ok {
			return true
		}
	}
	return false
}

// rsaBits is an RSA public key's size; 0 for another key.
func rsaBits(pub any) int {
	if k, ok := pub.(*rsa.PublicKey); ok {
		return k.N.BitLen()
	}
	return 0
}
