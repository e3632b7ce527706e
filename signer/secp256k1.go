//lint:file-ignore SA1019 secp256k1 is no curve crypto/ecdsa encodes (PublicKey.Bytes refuses it): its X and Y are the key

package signer

import (
	"crypto/ecdsa"
	"crypto/elliptic"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// secp256k1 here comes from decred's small module, not go-ethereum's
// crypto, so a program that signs JWTs through the client does not link
// go-ethereum (ES256K keys are still understood).

// S256 is the secp256k1 curve.
func S256() elliptic.Curve { return secp256k1.S256() }

// IsSecp256k1 reports whether pub is on the secp256k1 curve, whichever
// implementation made it (go-ethereum's and decred's are distinct
// values): its field and group order are secp256k1's.
func IsSecp256k1(pub *ecdsa.PublicKey) bool {
	p, want := pub.Curve.Params(), secp256k1.S256().Params()
	return p.P.Cmp(want.P) == 0 && p.N.Cmp(want.N) == 0 && p.B.Cmp(want.B) == 0
}

// secp256k1N is the order of the secp256k1 group.
var secp256k1N = secp256k1.S256().Params().N

// uncompressed is pub as 04 ‖ x ‖ y, each padded to 32 bytes.
func uncompressed(pub *ecdsa.PublicKey) []byte {
	out := make([]byte, 65)
	out[0] = 4
	pub.X.FillBytes(out[1:33])
	pub.Y.FillBytes(out[33:65])
	return out
}

// UncompressedPoint is pub as 04 ‖ x ‖ y, on any curve Sigil signs with.
func UncompressedPoint(pub *ecdsa.PublicKey) ([]byte, error) {
	if IsSecp256k1(pub) {
		return uncompressed(pub), nil
	}
	return pub.Bytes()
}

// parseSecp256k1 decodes an uncompressed point on the curve.
func parseSecp256k1(point []byte) (*ecdsa.PublicKey, error) {
	if len(point) != 65 || point[0] != 4 {
		return nil, errs.New(errs.InvalidArgument, "secp256k1 public key: want an uncompressed point (65 bytes)")
	}
	k, err := secp256k1.ParsePubKey(point)
	if err != nil {
		return nil, err
	}
	return k.ToECDSA(), nil
}

// verifySecp256k1 checks an r‖s signature of digest by pub (any s).
func verifySecp256k1(pub *ecdsa.PublicKey, digest, sig []byte) bool {
	if len(sig) != 64 || pub.X.BitLen() > 256 || pub.Y.BitLen() > 256 {
		return false
	}
	var r, s secp256k1.ModNScalar
	if r.SetByteSlice(sig[:32]) || s.SetByteSlice(sig[32:]) || r.IsZero() || s.IsZero() {
		return false // overflowed the group order, or zero
	}
	var x, y secp256k1.FieldVal
	if x.SetByteSlice(pub.X.Bytes()) || y.SetByteSlice(pub.Y.Bytes()) {
		return false
	}
	return decredecdsa.NewSignature(&r, &s).Verify(digest, secp256k1.NewPublicKey(&x, &y))
}
