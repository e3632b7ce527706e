// Package relyingparty is a strict JWT relying party, used by the rotation
// drill against a live server and by the rotation simulation in tests. It
// caches the JWK Set exactly as long as the max-age allows and never
// refetches early, not even for an unknown kid, so any gap in Sigil's
// rotation invariants shows up as a failed verification.
//
// Signatures are checked with go-jose, except ES256K, which go-jose does
// not implement (checked with go-ethereum's secp256k1 through signer).
// JWK Set members are parsed one by one: go-jose refuses a whole set that
// holds one member it does not know.
package relyingparty

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/sigil-hsm/sigil/signer"
)

// Fetch returns the current JWK Set and how long it may be cached.
type Fetch func() (body []byte, maxAge time.Duration, err error)

// Party verifies tokens against a cached JWK Set.
type Party struct {
	fetch     Fetch
	now       func() time.Time // this party's clock
	leeway    time.Duration
	keys      map[string]crypto.PublicKey
	fetchedAt time.Time
	maxAge    time.Duration
	Fetches   int
}

// New returns a party that fetches with fetch, reads the time from now
// and allows leeway on exp and nbf.
func New(fetch Fetch, now func() time.Time, leeway time.Duration) *Party {
	return &Party{fetch: fetch, now: now, leeway: leeway}
}

// refresh refetches the set once the cached one has expired.
func (p *Party) refresh() error {
	now := p.now()
	if p.keys != nil && now.Before(p.fetchedAt.Add(p.maxAge)) {
		return nil
	}
	body, maxAge, err := p.fetch()
	if err != nil {
		return err
	}
	keys, err := parseSet(body)
	if err != nil {
		return err
	}
	p.keys, p.fetchedAt, p.maxAge = keys, now, maxAge
	p.Fetches++
	return nil
}

func parseSet(body []byte) (map[string]crypto.PublicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("JWK Set: %w", err)
	}
	out := map[string]crypto.PublicKey{}
	for _, raw := range set.Keys {
		kid, pub, err := parseJWK(raw)
		if err != nil {
			return nil, err
		}
		out[kid] = pub
	}
	return out, nil
}

func parseJWK(raw json.RawMessage) (string, crypto.PublicKey, error) {
	var m struct{ Kid, Kty, Crv, X, Y string }
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", nil, err
	}
	if m.Kty == "EC" && m.Crv == "secp256k1" {
		x, errX := base64.RawURLEncoding.DecodeString(m.X)
		y, errY := base64.RawURLEncoding.DecodeString(m.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return "", nil, fmt.Errorf("secp256k1 JWK %s: bad coordinates", m.Kid)
		}
		pub, err := ethcrypto.UnmarshalPubkey(append(append([]byte{4}, x...), y...))
		return m.Kid, pub, err
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return "", nil, err
	}
	return k.KeyID, k.Key, nil
}

// Verify checks token's signature against the cached set and its exp and
// nbf against this party's clock.
func (p *Party) Verify(token string) error {
	if err := p.refresh(); err != nil {
		return err
	}
	hdr, err := header(token)
	if err != nil {
		return err
	}
	pub, ok := p.keys[hdr.Kid]
	if !ok {
		return fmt.Errorf("kid %s is not in the cached JWK Set", hdr.Kid)
	}
	var claims jwt.Claims
	if hdr.Alg == string(signer.ES256K) {
		err = verifyES256K(token, pub, &claims)
	} else {
		var tok *jwt.JSONWebToken
		if tok, err = jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(hdr.Alg)}); err == nil {
			err = tok.Claims(pub, &claims)
		}
	}
	if err != nil {
		return err
	}
	return claims.ValidateWithLeeway(jwt.Expected{Time: p.now()}, p.leeway)
}

type jwsHeader struct{ Alg, Kid string }

func header(token string) (jwsHeader, error) {
	var h jwsHeader
	first, _, ok := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(first)
	if !ok || err != nil || json.Unmarshal(b, &h) != nil {
		return h, fmt.Errorf("malformed JWS header")
	}
	return h, nil
}

func verifyES256K(token string, pub crypto.PublicKey, claims *jwt.Claims) error {
	i := strings.LastIndexByte(token, '.')
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil {
		return err
	}
	if err := signer.Verify(pub, signer.ES256K, signer.ES256K.Input([]byte(token[:i])), sig); err != nil {
		return err
	}
	_, payload, _ := strings.Cut(token[:i], ".")
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, claims)
}
