package client

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"io"
	"time"

	"github.com/go-jose/go-jose/v4"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

// KeySigner is a crypto.Signer for one generation of a raw key: the one
// active when it was made. Go's x509, tls and ssh packages take it. It
// signs with that generation only; once a rotation retires it, Sign fails
// with FailedPrecondition and a new KeySigner is needed, so a signature
// never comes from a key other than Public.
type KeySigner struct {
	c          *Client
	keyID      string
	alg        signer.Algorithm
	generation int32
	kid        string
	public     crypto.PublicKey
	timeout    time.Duration
}

var (
	_ crypto.Signer     = (*KeySigner)(nil)
	_ jose.OpaqueSigner = opaque{}
)

// Signer returns a KeySigner for raw key keyID's active generation.
func (c *Client) Signer(ctx context.Context, keyID string) (*KeySigner, error) {
	k, err := c.Keys.GetKey(ctx, &sigilv1.GetKeyRequest{Id: keyID})
	if err != nil {
		return nil, err
	}
	pk, err := c.Keys.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Id: keyID})
	if err != nil {
		return nil, err
	}
	pub, err := signer.ParsePublicKey(pk.GetPublicKeyDer())
	if err != nil {
		return nil, fmt.Errorf("sigil client: key %q: %w", keyID, err)
	}
	return &KeySigner{c: c, keyID: keyID, alg: signer.Algorithm(k.GetKey().GetAlgorithm()), generation: pk.GetGeneration(), kid: pk.GetKid(),
		public: pub, timeout: 30 * time.Second}, nil
}

// Public is the generation's public key.
func (s *KeySigner) Public() crypto.PublicKey { return s.public }

// Algorithm is the key's algorithm; KID the generation's RFC 7638
// thumbprint.
func (s *KeySigner) Algorithm() signer.Algorithm { return s.alg }
func (s *KeySigner) KID() string                 { return s.kid }

// Sign signs digest as crypto.Signer does: for ECDSA an ASN.1 DER
// signature (as crypto/ecdsa gives), for RS256 PKCS #1 v1.5 and for PS256
// PSS with a salt as long as the hash (opts must be *rsa.PSSOptions), for
// Ed25519 the message itself with crypto.Hash(0). opts must name the
// key's hash. The random source is unused: the HSM has its own. (TLS
// signs handshakes with RSA-PSS: an RSA key for a TLS server is PS256.)
func (s *KeySigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := s.checkOpts(opts); err != nil {
		return nil, err
	}
	return s.sign(digest, sigilv1.SignatureFormat_SIGNATURE_FORMAT_UNSPECIFIED) // DER for ECDSA
}

func (s *KeySigner) checkOpts(opts crypto.SignerOpts) error {
	want := s.alg.Hash()
	if s.alg == signer.EdDSA {
		want = 0
	}
	if opts == nil || opts.HashFunc() != want {
		return fmt.Errorf("sigil client: key %q (%s) signs with hash %v", s.keyID, s.alg, want)
	}
	if eo, ok := opts.(*ed25519.Options); ok && eo.Context != "" {
		return fmt.Errorf("sigil client: key %q signs pure Ed25519, not Ed25519ctx", s.keyID)
	}
	pss, isPSS := opts.(*rsa.PSSOptions)
	switch {
	case s.alg == signer.PS256 && !isPSS:
		return fmt.Errorf("sigil client: key %q is PS256: pass *rsa.PSSOptions", s.keyID)
	case s.alg == signer.RS256 && isPSS:
		return fmt.Errorf("sigil client: key %q is RS256 (PKCS #1 v1.5), not PSS", s.keyID)
	case isPSS && !s.alg.IsRSA():
		return fmt.Errorf("sigil client: key %q is %s, not RSA-PSS", s.keyID, s.alg)
	case isPSS && pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != rsa.PSSSaltLengthAuto && pss.SaltLength != want.Size():
		return fmt.Errorf("sigil client: key %q signs PSS with a salt as long as the hash", s.keyID)
	}
	return nil
}

// sign sends input (a digest, or the message for EdDSA) to the pinned
// generation.
func (s *KeySigner) sign(input []byte, format sigilv1.SignatureFormat) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	req := &sigilv1.SignRequest{KeyId: s.keyID, Format: format, Generation: s.generation}
	if s.alg == signer.EdDSA {
		req.Input = &sigilv1.SignRequest_Message{Message: input}
	} else {
		req.Input = &sigilv1.SignRequest_Digest{Digest: input}
	}
	resp, err := s.c.Signing.Sign(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetSignature(), nil
}

// Opaque returns the KeySigner as a go-jose OpaqueSigner, for callers
// that build their own JWS with a raw key.
func (s *KeySigner) Opaque() jose.OpaqueSigner { return opaque{s} }

type opaque struct{ s *KeySigner }

// Public is the generation's JWK, with its kid.
func (o opaque) Public() *jose.JSONWebKey {
	return &jose.JSONWebKey{Key: o.s.public, KeyID: o.s.kid, Algorithm: string(o.s.alg), Use: "sig"}
}

// Algs is the key's one JWS algorithm.
func (o opaque) Algs() []jose.SignatureAlgorithm {
	return []jose.SignatureAlgorithm{jose.SignatureAlgorithm(o.s.alg)}
}

// SignPayload hashes payload as alg requires and signs it in JWS form
// (r‖s for ECDSA).
func (o opaque) SignPayload(payload []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	if string(alg) != string(o.s.alg) {
		return nil, fmt.Errorf("sigil client: key %q signs %s, not %s", o.s.keyID, o.s.alg, alg)
	}
	return o.s.sign(o.s.alg.Input(payload), sigilv1.SignatureFormat_SIGNATURE_FORMAT_RAW)
}
