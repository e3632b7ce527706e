package jwks

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"

	"github.com/go-jose/go-jose/v4"

	"github.com/sigil-hsm/sigil/signer"
)

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of pub, base64url
// without padding: the kid Sigil gives the generation holding pub.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	var sum []byte
	if k, ok := pub.(*ecdsa.PublicKey); ok && signer.IsSecp256k1(k) {
		sum = secp256k1Thumbprint(k)
	} else {
		var err error
		if sum, err = (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256); err != nil {
			return "", fmt.Errorf("JWK thumbprint: %w", err)
		}
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// secp256k1Thumbprint is written by hand because go-jose does not know the
// curve (RFC 8812). The required members, in lexicographic order, are crv,
// kty, x and y, with coordinates padded to 32 bytes.
func secp256k1Thumbprint(k *ecdsa.PublicKey) []byte {
	b64 := base64.RawURLEncoding.EncodeToString
	x, y := make([]byte, 32), make([]byte, 32)
	k.X.FillBytes(x)
	k.Y.FillBytes(y)
	sum := sha256.Sum256(fmt.Appendf(nil, `{"crv":"secp256k1","kty":"EC","x":"%s","y":"%s"}`, b64(x), b64(y)))
	return sum[:]
}
