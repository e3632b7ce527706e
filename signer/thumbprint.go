package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of pub, base64url
// without padding: the kid Sigil gives the generation holding pub. It is a
// property of the key, so it lives here and not with the JWK Sets.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	var sum []byte
	if k, ok := pub.(*ecdsa.PublicKey); ok && IsSecp256k1(k) {
		sum = secp256k1Thumbprint(k)
	} else {
		var err error
		if sum, err = (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256); err != nil {
			return "", fmt.Errorf("JWK thumbprint: %w", err)
		}
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// secp256k1Thumbprint hashes the canonical JWK written by hand: go-jose
// lacks the curve.
func secp256k1Thumbprint(k *ecdsa.PublicKey) []byte {
	sum := sha256.Sum256(secp256k1Canonical(k))
	return sum[:]
}

// Secp256k1Coordinates returns a secp256k1 point's x and y, padded to 32
// bytes and base64url-encoded, as its RFC 8812 JWK holds them.
func Secp256k1Coordinates(pub *ecdsa.PublicKey) (string, string) {
	b64 := base64.RawURLEncoding.EncodeToString
	point := uncompressed(pub)
	return b64(point[1:33]), b64(point[33:65])
}

// secp256k1Canonical is the RFC 7638 input for a secp256k1 key: the
// required members in lexicographic order.
func secp256k1Canonical(pub *ecdsa.PublicKey) []byte {
	x, y := Secp256k1Coordinates(pub)
	return fmt.Appendf(nil, `{"crv":"secp256k1","kty":"EC","x":"%s","y":"%s"}`, x, y)
}
