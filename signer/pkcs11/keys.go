//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"math/big"
	"slices"
	"time"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// PKCS#11 3.0 constants that miekg/pkcs11 v1.1.2 lacks.
const (
	ckkECEdwards           = 0x40
	ckmECEdwardsKeyPairGen = 0x1055
	ckmEdDSA               = 0x1057
)

// DER-encoded curve OIDs, as CKA_EC_PARAMS holds them.
var (
	paramsP256      = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	paramsP384      = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}
	paramsSecp256k1 = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a}
	paramsEd25519   = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}
)

// keyGen is how one algorithm's key pair is generated.
type keyGen struct {
	mech    uint
	keyType uint
	public  []*pkcs11.Attribute // type-specific public template attributes
}

func keyGenFor(req signer.CreateKeyRequest) (keyGen, error) {
	ec := func(params []byte) keyGen {
		return keyGen{pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKK_EC, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params)}}
	}
	switch req.Algorithm {
	case signer.ES256:
		return ec(paramsP256), nil
	case signer.ES384:
		return ec(paramsP384), nil
	case signer.ES256K:
		return ec(paramsSecp256k1), nil
	case signer.EdDSA:
		return keyGen{ckmECEdwardsKeyPairGen, ckkECEdwards, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, paramsEd25519)}}, nil
	case signer.RS256, signer.PS256:
		if req.RSABits != 2048 && req.RSABits != 3072 {
			return keyGen{}, errs.New(errs.InvalidArgument, "RSA key size must be 2048 or 3072, got %d", req.RSABits)
		}
		return keyGen{pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKK_RSA, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, req.RSABits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		}}, nil
	}
	return keyGen{}, errs.New(errs.InvalidArgument, "unknown algorithm %q", req.Algorithm)
}

// templates returns the public and private templates: the private key is
// a token object, private, sensitive, never extractable and sign-only; the
// public key can verify and nothing else.
func (g keyGen) templates(label string, id []byte) (pub, priv []*pkcs11.Attribute) {
	attr := pkcs11.NewAttribute
	pub = append([]*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		attr(pkcs11.CKA_KEY_TYPE, g.keyType),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, false),
		attr(pkcs11.CKA_VERIFY, true),
		attr(pkcs11.CKA_ENCRYPT, false),
		attr(pkcs11.CKA_WRAP, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_LABEL, label),
		attr(pkcs11.CKA_ID, id),
	}, g.public...)
	priv = []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		attr(pkcs11.CKA_KEY_TYPE, g.keyType),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_SENSITIVE, true),
		attr(pkcs11.CKA_EXTRACTABLE, false),
		attr(pkcs11.CKA_SIGN, true),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_LABEL, label),
		attr(pkcs11.CKA_ID, id),
	}
	return pub, priv
}

// CreateKey generates a key pair inside the token under the label
// req.Name and the CKA_ID of req.Ref (a fresh one of Sigil's if req.Ref is
// empty). A label already in use is refused.
func (b *Backend) CreateKey(ctx context.Context, req signer.CreateKeyRequest) (signer.KeyInfo, error) {
	if req.Name == "" || len(req.Name) > 128 {
		return signer.KeyInfo{}, errs.New(errs.InvalidArgument, "key name must be 1 to 128 bytes")
	}
	gen, err := keyGenFor(req)
	if err != nil {
		return signer.KeyInfo{}, err
	}
	if req.Ref == "" {
		if req.Ref, err = b.NewRef(req.Name, req.Owner); err != nil {
			return signer.KeyInfo{}, err
		}
	}
	u, err := b.parseRef(req.Ref)
	if err != nil {
		return signer.KeyInfo{}, err
	}
	if u.Object != req.Name || !bytes.HasPrefix(u.ID, idMarker) {
		return signer.KeyInfo{}, errs.New(errs.InvalidArgument, "reference %s is not one NewRef made for %q", req.Ref, req.Name)
	}
	generate := func(h pkcs11.SessionHandle) (signer.KeyInfo, error) {
		defer b.changing()()
		if err := ctx.Err(); err != nil { // waited for a search past the caller's deadline
			return signer.KeyInfo{}, err
		}
		existing, err := b.find(h, nil, URI{Object: req.Name}, 1)
		if err != nil {
			return signer.KeyInfo{}, err
		}
		if len(existing) > 0 {
			return signer.KeyInfo{}, errs.New(errs.AlreadyExists, "token %q already holds an object labelled %q", b.token, req.Name)
		}
		pubT, privT := gen.templates(req.Name, u.ID)
		pubH, privH, err := b.mod.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(gen.mech, nil)}, pubT, privT)
		if err != nil {
			return signer.KeyInfo{}, err
		}
		pub, err := b.readPublic(h, pubH)
		if err != nil {
			_ = b.mod.DestroyObject(h, pubH)
			_ = b.mod.DestroyObject(h, privH)
			return signer.KeyInfo{}, err
		}
		b.cache.Store(u.String(), &object{priv: privH, pub: pub})
		return signer.KeyInfo{Ref: u.String(), Public: pub}, nil
	}
	return withSession(ctx, b, "generating a key", generate, b.abandoned)
}

// abandoned destroys a key pair generated for a caller that gave up
// waiting for it and was told the generation failed. It does not fail fast
// while the health probe finds the backend down (the module just answered
// this very call) and tries again for a while; if it still cannot, the
// keyring's record of the generation (state creating, this reference,
// kept because the backend did not answer) lets its sweep destroy the pair.
func (b *Backend) abandoned(info signer.KeyInfo) {
	u, err := b.parseRef(info.Ref)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abandonedTimeout)
	defer cancel()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		if _, err := call(ctx, b, "destroying an abandoned key pair", b.destroyObjects(u), nil); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// abandonedTimeout bounds the rollback of an abandoned generation.
const abandonedTimeout = time.Minute

// NewRef is the reference of the key about to be created under name for
// owner: the label and a CKA_ID of Sigil's marker, the owner's first four
// bytes and eight random ones.
func (b *Backend) NewRef(name string, owner []byte) (string, error) {
	id := make([]byte, 16)
	copy(id, idMarker)
	copy(id[len(idMarker):ownerEnd], owner)
	if _, err := rand.Read(id[ownerEnd:]); err != nil {
		return "", errs.Wrap(errs.Internal, err, "random key id")
	}
	return URI{Token: b.token, Object: name, ID: id}.String(), nil
}

// idMarker starts the CKA_ID of every key pair Sigil generates (the rest
// is random): with the label, how ListKeys tells Sigil's objects from
// those of other applications sharing the token.
var idMarker = []byte("SGL\x01")

// ownerEnd is where the owner's bytes end in a CKA_ID.
const ownerEnd = 8

// ListKeys returns the key pairs in the token that Sigil generated for
// owner: a label and a CKA_ID that starts with idMarker and the owner's
// bytes. Objects without a label, or with another application's or
// keyring's ID, are never listed.
func (b *Backend) ListKeys(ctx context.Context, owner []byte) ([]signer.ListedKey, error) {
	prefix := append(slices.Clip(idMarker), owner[:min(len(owner), ownerEnd-len(idMarker))]...)
	return withSession(ctx, b, "listing keys", func(h pkcs11.SessionHandle) ([]signer.ListedKey, error) {
		defer b.searching()()
		var out []signer.ListedKey
		seen := map[string]bool{}
		for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
			objs, err := b.findAll(h, class)
			if err != nil {
				return nil, err
			}
			for _, o := range objs {
				attrs, err := b.mod.GetAttributeValue(h, o, []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil), pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
				if err != nil {
					return nil, err
				}
				label, id := string(attrs[0].Value), attrs[1].Value
				u := URI{Token: b.token, Object: label, ID: id}
				if label == "" || len(id) < ownerEnd || !bytes.HasPrefix(id, prefix) || seen[u.String()] {
					continue
				}
				seen[u.String()] = true
				out = append(out, signer.ListedKey{Name: label, Ref: u.String()})
			}
		}
		return out, nil
	}, nil)
}

// findAll returns every object of class in the token.
func (b *Backend) findAll(h pkcs11.SessionHandle, class uint) ([]pkcs11.ObjectHandle, error) {
	if err := b.mod.FindObjectsInit(h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}); err != nil {
		return nil, err
	}
	var all []pkcs11.ObjectHandle
	var err error
	for {
		var objs []pkcs11.ObjectHandle
		objs, _, err = b.mod.FindObjects(h, 256)
		all = append(all, objs...)
		if err != nil || len(objs) < 256 {
			break
		}
	}
	if ferr := b.mod.FindObjectsFinal(h); err == nil {
		err = ferr
	}
	return all, err
}

// DestroyKey deletes every object ref names, public and private.
func (b *Backend) DestroyKey(ctx context.Context, ref string) error {
	u, err := b.parseRef(ref)
	if err != nil {
		return err
	}
	_, err = withSession(ctx, b, "destroying a key", b.destroyObjects(u), nil)
	return err
}

// destroyObjects is the call that deletes every object u names, public
// and private (only Sigil's own, for a name alone).
func (b *Backend) destroyObjects(u URI) func(pkcs11.SessionHandle) (struct{}, error) {
	return func(h pkcs11.SessionHandle) (struct{}, error) {
		defer b.changing()()
		// Forgotten inside the call, after the objects are gone: a call
		// its caller gave up on forgets them too. Only these: signing with
		// other keys keeps its cached handles.
		defer b.forgetObjects(u)
		objs, err := b.find(h, nil, u, 64)
		if err != nil {
			return struct{}{}, err
		}
		if len(u.ID) == 0 { // a name alone: only the objects Sigil made under it
			if objs, err = b.ours(h, objs); err != nil {
				return struct{}{}, err
			}
		}
		for _, o := range objs {
			// Invalid handle: someone else destroyed it since the search.
			if err := b.mod.DestroyObject(h, o); err != nil && !isCKR(err, pkcs11.CKR_OBJECT_HANDLE_INVALID) {
				return struct{}{}, err
			}
		}
		return struct{}{}, nil
	}
}

// forgetObjects drops the cached handles of the objects u names: every
// reference to its label that does not name another CKA_ID.
func (b *Backend) forgetObjects(u URI) {
	b.cache.Range(func(k, _ any) bool {
		if c, err := ParseURI(k.(string)); err != nil || c.Object == u.Object && (len(u.ID) == 0 || len(c.ID) == 0 || bytes.Equal(c.ID, u.ID)) {
			b.cache.Delete(k)
		}
		return true
	})
}

// ours keeps the objects whose CKA_ID carries Sigil's marker.
func (b *Backend) ours(h pkcs11.SessionHandle, objs []pkcs11.ObjectHandle) ([]pkcs11.ObjectHandle, error) {
	var out []pkcs11.ObjectHandle
	for _, o := range objs {
		attrs, err := b.mod.GetAttributeValue(h, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
		if err != nil {
			return nil, err
		}
		if bytes.HasPrefix(attrs[0].Value, idMarker) {
			out = append(out, o)
		}
	}
	return out, nil
}

// NameRef is a reference to whatever the token holds under the label
// name, whatever its CKA_ID; for tests and operators' tools.
func (b *Backend) NameRef(name string) string { return URI{Token: b.token, Object: name}.String() }

// Public returns the public key of the key ref names.
func (b *Backend) Public(ctx context.Context, ref string) (crypto.PublicKey, error) {
	return withSession(ctx, b, "reading a public key", func(h pkcs11.SessionHandle) (crypto.PublicKey, error) {
		o, err := b.object(h, ref)
		if err != nil {
			return nil, err
		}
		return o.pub, nil
	}, nil)
}

func (b *Backend) parseRef(ref string) (URI, error) {
	u, err := ParseURI(ref)
	if err != nil {
		return URI{}, err
	}
	if u.Token != "" && u.Token != b.token {
		return URI{}, errs.New(errs.InvalidArgument, "reference is for token %q, backend %q serves token %q", u.Token, b.name, b.token)
	}
	return u, nil
}

// object returns the cached handle and public key for ref, looking them up
// in the token on first use. Exactly one private and one public key must
// match: two is an error, never a guess.
func (b *Backend) object(h pkcs11.SessionHandle, ref string) (*object, error) {
	if o, ok := b.cache.Load(ref); ok {
		return o.(*object), nil
	}
	u, err := b.parseRef(ref)
	if err != nil {
		return nil, err
	}
	defer b.searching()()
	priv, err := b.findOne(h, pkcs11.CKO_PRIVATE_KEY, u)
	if err != nil {
		return nil, err
	}
	pubH, err := b.findOne(h, pkcs11.CKO_PUBLIC_KEY, u)
	if err != nil {
		return nil, err
	}
	pub, err := b.readPublic(h, pubH)
	if err != nil {
		return nil, err
	}
	o := &object{priv: priv, pub: pub}
	b.cache.Store(ref, o)
	return o, nil
}

func (b *Backend) findOne(h pkcs11.SessionHandle, class uint, u URI) (pkcs11.ObjectHandle, error) {
	objs, err := b.find(h, &class, u, 2)
	if err != nil {
		return 0, err
	}
	switch len(objs) {
	case 0:
		// The keyring records this key: its absence is an outage or an
		// object deleted behind Sigil's back, never "no such key". It is
		// called missing (an alarm) only if the token still shows the
		// health probe's object: a token that shows nothing is an outage.
		if err := b.showsObjects(h); err != nil {
			return 0, err
		}
		return 0, errs.New(errs.Unavailable, "backend %s: %w: %s in token %q", b.name, signer.ErrKeyMissing, u, b.token)
	case 1:
		return objs[0], nil
	}
	return 0, errs.New(errs.FailedPrecondition, "more than one object matches %s in token %q", u, b.token)
}

// find returns up to max objects of class (any class if nil) matching u.
func (b *Backend) find(h pkcs11.SessionHandle, class *uint, u URI, max int) ([]pkcs11.ObjectHandle, error) {
	var tmpl []*pkcs11.Attribute
	if class != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_CLASS, *class))
	}
	if u.Object != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
	}
	if len(u.ID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, u.ID))
	}
	if err := b.mod.FindObjectsInit(h, tmpl); err != nil {
		return nil, err
	}
	objs, _, err := b.mod.FindObjects(h, max)
	if ferr := b.mod.FindObjectsFinal(h); err == nil {
		err = ferr
	}
	return objs, err
}

// readPublic reads a public key object into a Go public key.
func (b *Backend) readPublic(h pkcs11.SessionHandle, o pkcs11.ObjectHandle) (crypto.PublicKey, error) {
	attrs, err := b.mod.GetAttributeValue(h, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return nil, err
	}
	switch keyType := bytesToUint(attrs[0].Value); keyType {
	case pkcs11.CKK_RSA:
		attrs, err := b.mod.GetAttributeValue(h, o, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			return nil, err
		}
		e := new(big.Int).SetBytes(attrs[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31 {
			return nil, errs.New(errs.Internal, "RSA public exponent out of range")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(e.Int64())}, nil
	case pkcs11.CKK_EC, ckkECEdwards:
		attrs, err := b.mod.GetAttributeValue(h, o, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil), pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, err
		}
		return parseECPoint(attrs[0].Value, attrs[1].Value)
	default:
		return nil, errs.New(errs.FailedPrecondition, "unsupported key type 0x%x", keyType)
	}
}

// parseECPoint decodes CKA_EC_POINT for the curve CKA_EC_PARAMS names. The
// point is a DER OCTET STRING (as PKCS#11 says and SoftHSM does); some
// modules return it bare, which is accepted too.
func parseECPoint(params, point []byte) (crypto.PublicKey, error) {
	var raw []byte
	if rest, err := asn1.Unmarshal(point, &raw); err != nil || len(rest) != 0 {
		raw = point
	}
	switch {
	case bytes.Equal(params, paramsP256):
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	case bytes.Equal(params, paramsP384):
		return ecdsa.ParseUncompressedPublicKey(elliptic.P384(), raw)
	case bytes.Equal(params, paramsSecp256k1):
		return ethcrypto.UnmarshalPubkey(raw)
	case bytes.Equal(params, paramsEd25519):
		if len(raw) != ed25519.PublicKeySize {
			return nil, errs.New(errs.Internal, "Ed25519 point of %d bytes", len(raw))
		}
		return ed25519.PublicKey(raw), nil
	}
	return nil, errs.New(errs.FailedPrecondition, "unsupported curve parameters %x", params)
}

// bytesToUint decodes a CK_ULONG attribute in host byte order.
func bytesToUint(b []byte) uint {
	var v uint
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint(b[i])
	}
	return v
}
