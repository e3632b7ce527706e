// Package jwt is the JWT purpose: a key of purpose jwt mints compact JWTs
// (sigil.v1.JWTService) with a key that stays in its backend, and rotates
// on the schedule its policy gives, its generations published in the
// JWKS ahead of signing (package jwks serves them).
//
// Minting validates what the client sends (claims: a JSON object of bounded
// size with well-typed registered claims and an exp within the key's
// policy; extra headers: never one that changes what the token means or
// where its key comes from), sets alg, kid, typ and iat, and signs the
// JWS signing input with the signer.Backend. Every algorithm, ES256K
// (RFC 8812) included, takes the same path; tests verify the tokens with
// go-jose and with the npm jose package, neither of them this code.
//
// The compact JWS is written here, not by go-jose: its signer cost 21 µs
// a token (BENCHMARKS.md); go-jose stays the verifier in tests.
package jwt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/strictjson"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/signer"
)

// Size limits on what a client sends.
const (
	MaxClaimsBytes = 16 << 10
	MaxHeaderBytes = 2 << 10
)

// forbiddenHeaders change what a token means (crit, b64, zip, enc) or
// where a verifier looks for its key (the rest); alg and kid are Sigil's.
// Names are compared in lower case: a verifier that matches names
// case-insensitively would read "JKU" as jku.
var forbiddenHeaders = map[string]bool{
	"alg": true, "kid": true, "jku": true, "jwk": true, "x5u": true, "x5c": true,
	"x5t": true, "x5t#s256": true, "crit": true, "b64": true, "zip": true, "enc": true,
}

// Request is what a client asks to be signed.
type Request struct {
	Claims  []byte        // a JSON object
	Headers []byte        // a JSON object of extra protected headers, or empty
	TTL     time.Duration // lifetime when claims carry no exp; the policy's T if zero
}

// Token is a signed JWT.
type Token struct {
	Compact    string
	KID        string
	Generation int
	IssuedAt   time.Time
	Expiry     time.Time
}

// Prepared is a validated request: the payload to sign and the headers.
type Prepared struct {
	Payload  []byte
	Headers  map[string]json.RawMessage
	IssuedAt time.Time
	Expiry   time.Time
}

// Prepare validates req against policy p at time now and builds the
// payload: the client's claims with iat set to now and exp set (or
// checked to lie within now + T).
func Prepare(req Request, p Policy, now time.Time) (Prepared, error) {
	claims, err := strictjson.Object("claims", req.Claims, MaxClaimsBytes)
	if err != nil {
		return Prepared{}, err
	}
	headers := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(req.Headers)) > 0 {
		if headers, err = strictjson.Object("headers", req.Headers, MaxHeaderBytes); err != nil {
			return Prepared{}, err
		}
	}
	for name, value := range headers {
		if forbiddenHeaders[strings.ToLower(name)] {
			return Prepared{}, errs.New(errs.InvalidArgument, "headers: %q is set by Sigil or not allowed", name)
		}
		if (name == "typ" || name == "cty") && !bytes.HasPrefix(bytes.TrimSpace(value), []byte(`"`)) {
			return Prepared{}, errs.New(errs.InvalidArgument, "headers: %q must be a string", name)
		}
	}
	now = now.Truncate(time.Second)
	exp, err := expiry(claims, req.TTL, p.MaxTokenTTL, now)
	if err != nil {
		return Prepared{}, err
	}
	if raw, ok := claims["nbf"]; ok {
		if _, err := numericDate("nbf", raw); err != nil {
			return Prepared{}, err
		}
	}
	claims["iat"] = json.RawMessage(strconv.AppendInt(nil, now.Unix(), 10))
	claims["exp"] = json.RawMessage(strconv.AppendInt(nil, exp.Unix(), 10))
	return Prepared{Payload: strictjson.Encode(claims), Headers: headers, IssuedAt: now, Expiry: exp}, nil
}

// expiry returns the token's exp: the claim if present (a NumericDate in
// (now, now+T]), else now + ttl (ttl ≤ T; T if zero).
func expiry(claims map[string]json.RawMessage, ttl, maxTTL time.Duration, now time.Time) (time.Time, error) {
	raw, has := claims["exp"]
	switch {
	case has && ttl != 0:
		return time.Time{}, errs.New(errs.InvalidArgument, "claims carry exp and a ttl is given: send one")
	case ttl < 0 || ttl > maxTTL || (ttl > 0 && ttl < time.Second):
		return time.Time{}, errs.New(errs.InvalidArgument, "ttl %v: must be from 1s to the key's max token lifetime %v", ttl, maxTTL)
	case !has && ttl == 0:
		return now.Add(maxTTL), nil
	case !has:
		return now.Add(ttl).Truncate(time.Second), nil
	}
	secs, err := numericDate("exp", raw)
	if err != nil {
		return time.Time{}, err
	}
	exp := time.Unix(int64(secs), 0)
	if !exp.After(now) || exp.After(now.Add(maxTTL)) {
		return time.Time{}, errs.New(errs.InvalidArgument, "claims: exp must lie in (now, now + %v]", maxTTL)
	}
	return exp, nil
}

// numericDate parses an RFC 7519 NumericDate: a non-negative JSON number.
func numericDate(name string, raw json.RawMessage) (float64, error) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f < 0 || math.IsInf(f, 0) || f > 1<<40 {
		return 0, errs.New(errs.InvalidArgument, "claims: %s must be a NumericDate (seconds since the epoch)", name)
	}
	return f, nil
}

// Sign mints a token from a prepared request with the generation that
// signs for key s now. The compact serialisation (RFC 7515 §7.1) is
// written here: header and payload are JSON objects this package built
// from validated members, so a token is three base64url segments joined
// by dots. go-jose's signer, used before, marshals the header twice by
// reflection and cost 21 µs a token, most of what JWT added to a signature.
func Sign(ctx context.Context, s keyring.Signing, p Prepared) (Token, error) {
	g, alg := s.Generation, s.Key.Algorithm
	header := maps.Clone(p.Headers)
	if header == nil {
		header = map[string]json.RawMessage{}
	}
	if _, ok := header["typ"]; !ok {
		header["typ"] = json.RawMessage(`"JWT"`)
	}
	header["alg"], header["kid"] = strictjson.String(string(alg)), strictjson.String(g.KID())
	enc := base64.RawURLEncoding
	h := strictjson.Encode(header)
	token := make([]byte, 0, enc.EncodedLen(len(h))+enc.EncodedLen(len(p.Payload))+2+enc.EncodedLen(512))
	token = enc.AppendEncode(token, h)
	token = append(token, '.')
	token = enc.AppendEncode(token, p.Payload)
	sig, err := s.Sign(ctx, alg.Input(token))
	if err != nil {
		return Token{}, err
	}
	if alg == signer.ES256K {
		sig = signer.LowS(sig) // every ES256K verifier accepts low-S
	}
	token = enc.AppendEncode(append(token, '.'), sig)
	return Token{Compact: string(token), KID: g.KID(), Generation: g.Number, IssuedAt: p.IssuedAt, Expiry: p.Expiry}, nil
}
