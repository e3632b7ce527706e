package jwks

import (
	"crypto"
	"crypto/ecdsa"
	"encoding/json"

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
	x, y := signer.Secp256k1Coordinates(pub)
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
