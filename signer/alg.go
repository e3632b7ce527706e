package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Algorithm is a JOSE signature algorithm name; it fixes the key type, the
// hash and the padding.
type Algorithm string

// The algorithms Sigil signs with.
const (
	ES256  Algorithm = "ES256"  // ECDSA P-256, SHA-256
	ES384  Algorithm = "ES384"  // ECDSA P-384, SHA-384
	ES256K Algorithm = "ES256K" // ECDSA secp256k1, SHA-256 (RFC 8812)
	RS256  Algorithm = "RS256"  // RSA PKCS#1 v1.5, SHA-256
	PS256  Algorithm = "PS256"  // RSA-PSS, SHA-256, MGF1-SHA-256, salt = 32
	EdDSA  Algorithm = "EdDSA"  // Ed25519 over the message itself
)

// Algorithms lists every supported algorithm.
var Algorithms = []Algorithm{ES256, ES384, ES256K, RS256, PS256, EdDSA}

// ParseAlgorithm returns the Algorithm named s, or an InvalidArgument error.
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range Algorithms {
		if string(a) == s {
			return a, nil
		}
	}
	return "", errs.New(errs.InvalidArgument, "unknown algorithm %q (want one of %v)", s, Algorithms)
}

// Hash is the hash whose digest Sign takes; 0 for EdDSA, which signs the
// message itself.
func (a Algorithm) Hash() crypto.Hash {
	switch a {
	case ES384:
		return crypto.SHA384
	case EdDSA:
		return 0
	}
	return crypto.SHA256
}

// Input returns what Sign takes to sign msg with a: the digest of a's
// hash, or for EdDSA the message itself.
func (a Algorithm) Input(msg []byte) []byte {
	if a.Hash() == 0 {
		return msg
	}
	h := a.Hash().New()
	h.Write(msg)
	return h.Sum(nil)
}

// IsRSA reports whether a uses an RSA key.
func (a Algorithm) IsRSA() bool { return a == RS256 || a == PS256 }

// IsECDSA reports whether a uses an ECDSA key.
func (a Algorithm) IsECDSA() bool { return a == ES256 || a == ES384 || a == ES256K }

// MaxMessage is the largest message Sign accepts for EdDSA, which signs the
// message itself rather than a digest.
const MaxMessage = 64 << 10

// CheckInput reports whether input has the length a's Sign takes.
func (a Algorithm) CheckInput(input []byte) error {
	if a == EdDSA {
		if len(input) == 0 || len(input) > MaxMessage {
			return errs.New(errs.InvalidArgument, "EdDSA message must be 1 to %d bytes, got %d", MaxMessage, len(input))
		}
		return nil
	}
	if want := a.Hash().Size(); len(input) != want {
		return errs.New(errs.InvalidArgument, "%s digest must be %d bytes (%s), got %d", a, want, a.Hash(), len(input))
	}
	return nil
}

// CheckPublic reports whether pub is a key of the type a signs with.
func (a Algorithm) CheckPublic(pub crypto.PublicKey) error {
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch a {
		case ES256:
			ok = k.Curve == elliptic.P256()
		case ES384:
			ok = k.Curve == elliptic.P384()
		case ES256K:
			ok = IsSecp256k1(k)
		}
	case *rsa.PublicKey:
		ok = a.IsRSA() && (k.N.BitLen() == 2048 || k.N.BitLen() == 3072)
	case ed25519.PublicKey:
		ok = a == EdDSA
	}
	if !ok {
		return errs.New(errs.FailedPrecondition, "public key of type %T does not fit algorithm %s", pub, a)
	}
	return nil
}
