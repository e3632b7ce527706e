//go:build cgo

package pkcs11_test

import (
	"context"
	"testing"

	"github.com/sigil-hsm/sigil/internal/testutil/backendtest"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

// The backend conformance suite on a SoftHSM token: every algorithm, the
// JWT path and the Ethereum path, as the KMS backend runs them too.
func TestConformance(t *testing.T) {
	b, err := pkcs11.Open(context.Background(), "hsm-conformance", pkcs11.Config(softhsmtest.Token(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	backendtest.Run(t, backendtest.Suite{Backend: b, Keys: []backendtest.Key{
		{Alg: signer.ES256}, {Alg: signer.ES384}, {Alg: signer.ES256K}, {Alg: signer.RS256, Bits: 2048},
		{Alg: signer.RS256, Bits: 3072}, {Alg: signer.PS256, Bits: 3072}, {Alg: signer.EdDSA},
	}})
}
