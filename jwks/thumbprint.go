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

// secp256k1Thumbprint hashes the canonical JWK written by hand in jwk.go.
func secp256k1Thumbprint(k *ecdsa.PublicKey) []byte {
	sum := sha256.Sum256(secp256k1Canonical(k))
	return sum[:]
}
