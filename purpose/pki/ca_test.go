package pki_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/keyringtest"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/pki"
	"github.com/sigil-hsm/sigil/signer"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 2) }

// A CA certificate past its end issues nothing; a generation made
// outside sigil pki (keys rotate) issues nothing until certified; a
// leaf never outlives its CA certificate; the CA key signs nothing else.
func TestIssueChecksTheCACertificate(t *testing.T) {
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	e := keyringtest.HSM(t, keyringtest.Options{Now: clock})
	ctx := context.Background()
	if _, err := e.Keyring.Create(ctx, keyring.CreateSpec{ID: "ca", Purpose: pki.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	ca := pki.CA{Keys: e.Keyring, Anchors: e.Store, Now: clock}
	cert, made, err := ca.Certify(ctx, "ca", 2*time.Hour)
	if err != nil || !made {
		t.Fatal(made, err)
	}
	if _, made, _ := ca.Certify(ctx, "ca", 0); made {
		t.Fatal("a second Certify made another certificate")
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := ca.Issue(ctx, "ca", pki.Leaf{Usage: pki.Client, Names: []string{"spiffe://example.org/a"}, Public: leafKey.Public()})
	if err != nil || !leaf.NotAfter.Equal(cert.NotAfter) {
		t.Fatalf("a 30-day leaf under a 2-hour CA: until %v (CA until %v), %v", leaf.NotAfter, cert.NotAfter, err)
	}
	now = now.Add(3 * time.Hour)
	if _, _, err := ca.Issue(ctx, "ca", pki.Leaf{Usage: pki.Client, Names: []string{"spiffe://example.org/a"}, Public: leafKey.Public()}); !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("issuing under an expired CA certificate: %v", err)
	}
	if _, err := e.Keyring.Rotate(ctx, "ca", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Issue(ctx, "ca", pki.Leaf{Usage: pki.Client, Names: []string{"spiffe://example.org/a"}, Public: leafKey.Public()}); !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "sigil pki init") {
		t.Fatalf("issuing with an uncertified generation: %v", err)
	}
	if _, err := e.Keyring.ForSigning(ctx, "ca", "raw"); err == nil {
		t.Fatal("the CA key is usable as a raw key")
	}
}
