package jwks

import (
	"crypto"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"

	"github.com/sigil-hsm/sigil/signer"
)

// JWK is one published key: a public key with its kid and algorithm.
type JWK struct {
	KID       string
	Algorithm signer.Algorithm
	Public    crypto.PublicKey
}

// MarshalJSON encodes the JWK with kid, alg and use "sig".
func (k JWK) MarshalJSON() ([]byte, error) {
	if pub, ok := k.Public.(*ecdsa.PublicKey); ok && signer.IsSecp256k1(pub) {
		return secp256k1JWK(pub, k.KID)
	}
	return json.Marshal(jose.JSONWebKey{Key: k.Public, KeyID: k.KID, Algorithm: string(k.Algorithm), Use: "sig"})
}

// secp256k1JWK writes the RFC 8812 JWK by hand: go-jose lacks the curve.
func secp256k1JWK(pub *ecdsa.PublicKey, kid string) ([]byte, error) {
	x, y := coordinates(pub)
	return json.Marshal(struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Y   string `json:"y"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
	}{"EC", "secp256k1", x, y, kid, string(signer.ES256K), "sig"})
}

// coordinates returns a secp256k1 point's x and y, padded to 32 bytes and
// base64url-encoded.
func coordinates(pub *ecdsa.PublicKey) (string, string) {
	b64 := base64.RawURLEncoding.EncodeToString
	return b64(pub.X.FillBytes(make([]byte, 32))), b64(pub.Y.FillBytes(make([]byte, 32)))
}

// secp256k1Canonical is the RFC 7638 input for a secp256k1 key: the
// required members in lexicographic order.
func secp256k1Canonical(pub *ecdsa.PublicKey) []byte {
	x, y := coordinates(pub)
	return fmt.Appendf(nil, `{"crv":"secp256k1","kty":"EC","x":"%s","y":"%s"}`, x, y)
}
