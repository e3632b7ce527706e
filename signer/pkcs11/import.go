//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // OAEP's hash, for modules without SHA-256 OAEP (SoftHSM 2.6)
	"crypto/sha256"
	"encoding/asn1"
	"hash"
	"math/big"

	"github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

var _ signer.Importer = (*Backend)(nil)

// wrappingBits is the size of a wrapping key pair's RSA modulus.
const wrappingBits = 3072

// NewWrappingKey makes an RSA key pair at ref that can unwrap and do
// nothing else (a token object, sensitive, never extractable), and finds
// which OAEP hash the module unwraps with by unwrapping a test key:
// SHA-256 if it can, else SHA-1 (SoftHSM 2.6 knows only SHA-1).
func (b *Backend) NewWrappingKey(ctx context.Context, ref string) (*rsa.PublicKey, signer.Wrapping, error) {
	u, err := b.parseRef(ref)
	if err != nil {
		return nil, signer.Wrapping{}, err
	}
	if !bytes.HasPrefix(u.ID, idMarker) {
		return nil, signer.Wrapping{}, errs.New(errs.InvalidArgument, "reference %s is not one NewRef made", ref)
	}
	type made struct {
		pub  *rsa.PublicKey
		wrap signer.Wrapping
	}
	m, err := withSession(ctx, b, "making a wrapping key", func(h pkcs11.SessionHandle) (made, error) {
		defer b.changing()()
		if existing, err := b.find(h, nil, URI{Object: u.Object}, 1); err != nil || len(existing) > 0 {
			return made{}, cmpErr(err, errs.New(errs.AlreadyExists, "token %q already holds an object labelled %q", b.token, u.Object))
		}
		attr := pkcs11.NewAttribute
		pubT := []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			attr(pkcs11.CKA_TOKEN, true), attr(pkcs11.CKA_PRIVATE, false),
			attr(pkcs11.CKA_ENCRYPT, true), attr(pkcs11.CKA_WRAP, true), attr(pkcs11.CKA_VERIFY, false),
			attr(pkcs11.CKA_MODULUS_BITS, wrappingBits), attr(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			attr(pkcs11.CKA_LABEL, u.Object), attr(pkcs11.CKA_ID, u.ID),
		}
		privT := []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			attr(pkcs11.CKA_TOKEN, true), attr(pkcs11.CKA_PRIVATE, true),
			attr(pkcs11.CKA_SENSITIVE, true), attr(pkcs11.CKA_EXTRACTABLE, false),
			attr(pkcs11.CKA_UNWRAP, true), attr(pkcs11.CKA_DECRYPT, false), attr(pkcs11.CKA_SIGN, false), attr(pkcs11.CKA_DERIVE, false),
			attr(pkcs11.CKA_LABEL, u.Object), attr(pkcs11.CKA_ID, u.ID),
		}
		pubH, privH, err := b.mod.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}, pubT, privT)
		if err != nil {
			return made{}, err
		}
		pub, err := b.readPublic(h, pubH)
		var w signer.Wrapping
		if err == nil {
			w, err = b.probeOAEP(h, privH, pub.(*rsa.PublicKey))
		}
		if err != nil {
			_ = b.mod.DestroyObject(h, pubH)
			_ = b.mod.DestroyObject(h, privH)
			return made{}, err
		}
		return made{pub.(*rsa.PublicKey), w}, nil
	}, func(made) { b.abandoned(signer.KeyInfo{Ref: ref}) })
	return m.pub, m.wrap, err
}

// cmpErr is err if there is one, else fallback.
func cmpErr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// probeOAEP unwraps a random AES key encrypted to pub with OAEP-SHA-256,
// then with OAEP-SHA-1, into a session object it destroys, and says which
// the module did.
func (b *Backend) probeOAEP(h pkcs11.SessionHandle, priv pkcs11.ObjectHandle, pub *rsa.PublicKey) (signer.Wrapping, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return signer.Wrapping{}, err
	}
	var last error
	for _, w := range []signer.Wrapping{{OAEPHash: "sha256"}, {OAEPHash: "sha1"}} {
		ct, err := rsa.EncryptOAEP(oaepHash(w)(), rand.Reader, pub, key, nil)
		if err != nil {
			return signer.Wrapping{}, err
		}
		aes, err := b.unwrapAES(h, priv, w, ct)
		if err == nil {
			_ = b.mod.DestroyObject(h, aes)
			return w, nil
		}
		last = err
	}
	return signer.Wrapping{}, errs.New(errs.FailedPrecondition, "the module cannot unwrap with RSA-OAEP (SHA-256 or SHA-1): %v", last)
}

func oaepHash(w signer.Wrapping) func() hash.Hash {
	if w.OAEPHash == "sha1" {
		return sha1.New
	}
	return sha256.New
}

// unwrapAES unwraps an AES-256 key encrypted with RSA-OAEP into a session
// object that can only unwrap.
func (b *Backend) unwrapAES(h pkcs11.SessionHandle, priv pkcs11.ObjectHandle, w signer.Wrapping, ct []byte) (pkcs11.ObjectHandle, error) {
	hashMech, mgf := uint(pkcs11.CKM_SHA256), uint(pkcs11.CKG_MGF1_SHA256)
	if w.OAEPHash == "sha1" {
		hashMech, mgf = pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1
	}
	mech := pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP, pkcs11.NewOAEPParams(hashMech, mgf, pkcs11.CKZ_DATA_SPECIFIED, nil))
	attr := pkcs11.NewAttribute
	return b.mod.UnwrapKey(h, []*pkcs11.Mechanism{mech}, priv, ct, []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_SENSITIVE, true), attr(pkcs11.CKA_EXTRACTABLE, false),
		attr(pkcs11.CKA_UNWRAP, true), attr(pkcs11.CKA_ENCRYPT, false), attr(pkcs11.CKA_DECRYPT, false), attr(pkcs11.CKA_WRAP, false),
	})
}

// ckmAESKeyWrapPad is CKM_AES_KEY_WRAP_PAD (RFC 5649), which miekg/pkcs11
// v1.1.2 lacks.
const ckmAESKeyWrapPad = 0x210A

// ImportKey unwraps imp.Wrapped (see signer.Wrapping) with the wrapping
// key at imp.WrappingRef into a private key labelled req.Name under
// req.Ref's CKA_ID, with the attributes a generated one has; checks it is
// of req.Algorithm's curve or size and the private key of imp.Public (a
// signature verified); and makes its public key object from imp.Public.
// The AES key lives only as a session object, destroyed before return.
func (b *Backend) ImportKey(ctx context.Context, req signer.CreateKeyRequest, imp signer.Import) (signer.KeyInfo, error) {
	gen, err := keyGenFor(req)
	if err != nil {
		return signer.KeyInfo{}, err
	}
	if req.Algorithm == signer.EdDSA {
		return signer.KeyInfo{}, errs.New(errs.InvalidArgument, "EdDSA keys cannot be imported into a PKCS#11 backend")
	}
	u, err := b.parseRef(req.Ref)
	if err != nil {
		return signer.KeyInfo{}, err
	}
	wu, err := b.parseRef(imp.WrappingRef)
	if err != nil {
		return signer.KeyInfo{}, err
	}
	if u.Object != req.Name || !bytes.HasPrefix(u.ID, idMarker) {
		return signer.KeyInfo{}, errs.New(errs.InvalidArgument, "reference %s is not one NewRef made for %q", req.Ref, req.Name)
	}
	if err := gen.matches(req, imp.Public); err != nil {
		return signer.KeyInfo{}, err
	}
	unwrap := func(h pkcs11.SessionHandle) (signer.KeyInfo, error) {
		defer b.changing()()
		if existing, err := b.find(h, nil, URI{Object: req.Name}, 1); err != nil || len(existing) > 0 {
			return signer.KeyInfo{}, cmpErr(err, errs.New(errs.AlreadyExists, "token %q already holds an object labelled %q", b.token, req.Name))
		}
		wrapH, err := b.findOne(h, pkcs11.CKO_PRIVATE_KEY, wu)
		if err != nil {
			return signer.KeyInfo{}, err
		}
		priv, err := b.unwrapPrivate(h, wrapH, gen, req, u, imp.Wrapped)
		if err != nil {
			return signer.KeyInfo{}, err
		}
		var pubH pkcs11.ObjectHandle
		pubT, err := publicTemplate(gen, req.Name, u.ID, imp.Public)
		if err == nil {
			pubH, err = b.mod.CreateObject(h, pubT)
		}
		if err == nil {
			err = b.provePair(h, priv, req.Algorithm, imp.Public)
		}
		if err != nil {
			_ = b.mod.DestroyObject(h, priv)
			if pubH != 0 {
				_ = b.mod.DestroyObject(h, pubH)
			}
			return signer.KeyInfo{}, err
		}
		b.cache.Store(u.String(), &object{priv: priv, pub: imp.Public})
		return signer.KeyInfo{Ref: u.String(), Public: imp.Public}, nil
	}
	return withSession(ctx, b, "importing a key", unwrap, b.abandoned)
}

// unwrapPrivate unwraps the AES key, then with it the private key, as a
// generated private key is made (keyGen.templates); the AES key is
// destroyed either way. A private key of another curve is destroyed and
// refused.
func (b *Backend) unwrapPrivate(h pkcs11.SessionHandle, wrapH pkcs11.ObjectHandle, gen keyGen, req signer.CreateKeyRequest, u URI, wrapped []byte) (pkcs11.ObjectHandle, error) {
	const aesWrapped = wrappingBits / 8
	if len(wrapped) <= aesWrapped+8 {
		return 0, errs.New(errs.InvalidArgument, "the wrapped key is %d bytes: too short for an RSA-%d wrapped AES key and a wrapped private key", len(wrapped), wrappingBits)
	}
	var aes pkcs11.ObjectHandle
	var err error
	for _, w := range []signer.Wrapping{{OAEPHash: "sha256"}, {OAEPHash: "sha1"}} {
		if aes, err = b.unwrapAES(h, wrapH, w, wrapped[:aesWrapped]); err == nil {
			break
		}
	}
	if err != nil {
		return 0, errs.New(errs.InvalidArgument, "the wrapped AES key does not unwrap with this import's wrapping key (tampered, or wrapped to other parameters): %v", err)
	}
	defer b.mod.DestroyObject(h, aes)
	_, privT := gen.templates(req.Name, u.ID)
	priv, err := b.mod.UnwrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmAESKeyWrapPad, nil)}, aes, wrapped[aesWrapped:], privT)
	if err != nil {
		return 0, errs.New(errs.InvalidArgument, "the wrapped private key does not unwrap (tampered, not PKCS#8, or not of a %s key): %v", req.Algorithm, err)
	}
	if gen.keyType == pkcs11.CKK_EC {
		attrs, err := b.mod.GetAttributeValue(h, priv, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil)})
		if err != nil || !bytes.Equal(attrs[0].Value, gen.public[0].Value) {
			_ = b.mod.DestroyObject(h, priv)
			return 0, errs.New(errs.InvalidArgument, "the wrapped private key is not on the curve of %s", req.Algorithm)
		}
	}
	return priv, nil
}

// matches checks that pub is a public key of the algorithm and size gen
// generates.
func (g keyGen) matches(req signer.CreateKeyRequest, pub crypto.PublicKey) error {
	if err := req.Algorithm.CheckPublic(pub); err != nil {
		return errs.New(errs.InvalidArgument, "the public key given: %v", err)
	}
	if p, ok := pub.(*rsa.PublicKey); ok && p.N.BitLen() != req.RSABits {
		return errs.New(errs.InvalidArgument, "the public key given is RSA-%d, not RSA-%d", p.N.BitLen(), req.RSABits)
	}
	return nil
}

// ecPointDER is CKA_EC_POINT of pub: its uncompressed point in a DER
// OCTET STRING.
func ecPointDER(p *ecdsa.PublicKey) ([]byte, error) {
	point, err := signer.UncompressedPoint(p)
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "the public key given: %v", err)
	}
	return asn1.Marshal(point)
}

// publicTemplate is the public key object of an imported pair, with the
// attributes a generated one has.
func publicTemplate(g keyGen, label string, id []byte, pub crypto.PublicKey) ([]*pkcs11.Attribute, error) {
	t, _ := g.templates(label, id)
	t = slicesDeleteType(t, pkcs11.CKA_MODULUS_BITS)
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		point, err := ecPointDER(p)
		if err != nil {
			return nil, err
		}
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, point))
	case *rsa.PublicKey:
		t = slicesDeleteType(t, pkcs11.CKA_PUBLIC_EXPONENT)
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_MODULUS, p.N.Bytes()), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(p.E)).Bytes()))
	}
	return t, nil
}

// slicesDeleteType drops the attributes of type typ.
func slicesDeleteType(t []*pkcs11.Attribute, typ uint) []*pkcs11.Attribute {
	out := t[:0:0]
	for _, a := range t {
		if a.Type != typ {
			out = append(out, a)
		}
	}
	return out
}

// provePair signs a random digest with the unwrapped private key and
// verifies it with the public key given: a wrapped key that is not the
// public key's is refused before anything is recorded.
func (b *Backend) provePair(h pkcs11.SessionHandle, priv pkcs11.ObjectHandle, alg signer.Algorithm, pub crypto.PublicKey) error {
	digest := make([]byte, 32)
	if _, err := rand.Read(digest); err != nil {
		return err
	}
	if alg == signer.ES384 {
		digest = make([]byte, 48)
		_, _ = rand.Read(digest)
	}
	mech, data := mechanism(alg, digest)
	err := b.mod.SignInit(h, []*pkcs11.Mechanism{mech}, priv)
	var sig []byte
	if err == nil {
		sig, err = b.mod.Sign(h, data)
	}
	if err != nil {
		return errs.New(errs.InvalidArgument, "the imported key does not sign: %v", err)
	}
	if err := signer.Verify(pub, alg, digest, sig); err != nil {
		return errs.New(errs.InvalidArgument, "the wrapped private key is not the private key of the public key given")
	}
	return nil
}
