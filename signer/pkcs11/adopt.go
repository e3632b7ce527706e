//go:build cgo

package pkcs11

import (
	"context"
	"crypto"

	"github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

var _ signer.Adopter = (*Backend)(nil)

// Adopt takes over the key pair uri names in this backend's token: one
// private key, sensitive, never extractable, able to sign, with one public
// key of the same label and ID. The reference returned names it by label
// and CKA_ID, as the keyring's own keys are named.
func (b *Backend) Adopt(ctx context.Context, uri string) (string, string, crypto.PublicKey, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return "", "", nil, err
	}
	if u.Token != "" && u.Token != b.token {
		return "", "", nil, errs.New(errs.InvalidArgument, "%s names token %q; backend %s is token %q", uri, u.Token, b.name, b.token)
	}
	u.Token = b.token
	type found struct {
		name, ref string
		pub       crypto.PublicKey
	}
	f, err := withSession(ctx, b, "adopting a key", func(h pkcs11.SessionHandle) (found, error) {
		defer b.searching()()
		priv, err := b.findOne(h, pkcs11.CKO_PRIVATE_KEY, u)
		if err != nil {
			return found{}, err
		}
		attrs, err := b.mod.GetAttributeValue(h, priv, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil), pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil), pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
		if err != nil {
			return found{}, err
		}
		sensitive, extractable, sign := isTrue(attrs[0].Value), isTrue(attrs[1].Value), isTrue(attrs[2].Value)
		if !sensitive || extractable || !sign {
			return found{}, errs.New(errs.FailedPrecondition, "the private key %s can leave the token or cannot sign (sensitive %v, extractable %v, sign %v): Sigil adopts only a key that never leaves its HSM", uri, sensitive, extractable, sign)
		}
		exact := URI{Token: b.token, Object: string(attrs[3].Value), ID: attrs[4].Value}
		if exact.Object == "" {
			return found{}, errs.New(errs.FailedPrecondition, "the private key %s has no label", uri)
		}
		pubH, err := b.findOne(h, pkcs11.CKO_PUBLIC_KEY, exact)
		if err != nil {
			return found{}, err
		}
		pub, err := b.readPublic(h, pubH)
		return found{name: exact.Object, ref: exact.String(), pub: pub}, err
	}, nil)
	return f.name, f.ref, f.pub, err
}

// isTrue reads a CK_BBOOL attribute.
func isTrue(v []byte) bool { return len(v) == 1 && v[0] != 0 }
