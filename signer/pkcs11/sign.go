//go:build cgo

package pkcs11

import (
	"context"

	"github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// digestInfoSHA256 is the DER DigestInfo prefix CKM_RSA_PKCS needs in front
// of a SHA-256 digest for RS256.
var digestInfoSHA256 = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// mechanism returns the PKCS#11 mechanism for alg and the bytes it signs.
func mechanism(alg signer.Algorithm, input []byte) (*pkcs11.Mechanism, []byte) {
	switch alg {
	case signer.RS256:
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil), append(append([]byte{}, digestInfoSHA256...), input...)
	case signer.PS256:
		params := pkcs11.NewPSSParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, 32)
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, params), input
	case signer.EdDSA:
		return pkcs11.NewMechanism(ckmEdDSA, nil), input
	}
	// ECDSA over a digest; the token returns r‖s.
	return pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil), input
}

// Sign signs input (a digest, or the message for EdDSA) with the key ref
// names. The key must be of the type alg signs with.
func (b *Backend) Sign(ctx context.Context, ref string, alg signer.Algorithm, input []byte) ([]byte, error) {
	if err := alg.CheckInput(input); err != nil {
		return nil, err
	}
	sig, err := withSession(ctx, b, "signing", func(h pkcs11.SessionHandle) ([]byte, error) {
		o, err := b.object(h, ref)
		if err != nil {
			return nil, err
		}
		if err := alg.CheckPublic(o.pub); err != nil {
			return nil, err
		}
		mech, data := mechanism(alg, input)
		if err := b.mod.SignInit(h, []*pkcs11.Mechanism{mech}, o.priv); err != nil {
			return nil, err
		}
		return b.mod.Sign(h, data)
	}, nil)
	if err == nil && len(sig) == 0 {
		return nil, errs.New(errs.Internal, "token returned an empty signature")
	}
	return sig, err
}
