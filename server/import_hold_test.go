package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"testing"

	"github.com/sigil-hsm/sigil/internal/testutil/wraptest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

const importHoldPolicy = `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/officer/*
    keys: ["*"]
    allow: [approvals.approve, keys.read]
approvals:
  - operation: keys.admin
    keys: ["pay-*"]
    actions: [rotate-now, revoke]
    approvers: [spiffe://example.org/officer/*]
    quorum: 2
`

// An import into a key that exists is its next generation, placed as a
// rotation: a rule holding rotate-now holds it as it holds RotateKey
// (found by a hostile review: judged as a creation, it replaced a raw
// key's signing key with no approval). Import parameters for a key that
// does not exist yet are given under any keys.admin rule.
func TestImportIntoAKeyIsHeldAsItsRotation(t *testing.T) {
	e := newDualEnvWith(t, importHoldPolicy)
	ctx := context.Background()
	ops := e.keys(opsID)
	if _, err := ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "pay-1", Algorithm: "ES256", Purpose: "raw"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.GetImportParameters(ctx, &sigilv1.GetImportParametersRequest{Id: "pay-2", Algorithm: "ES256"}); err != nil {
		t.Fatalf("import parameters for a new key under a keys.admin rule: %v", err)
	}
	p, err := ops.GetImportParameters(ctx, &sigilv1.GetImportParametersRequest{Id: "pay-1", Algorithm: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	wrapping, err := signer.ParsePublicKeyPEM(p.GetWrappingPublicKeyPem())
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(&mine.PublicKey)
	_, err = ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "pay-1", Algorithm: "ES256", Purpose: "raw",
		Imported: &sigilv1.ImportedKey{WrappedKey: wraptest.Wrap(t, wrapping.(*rsa.PublicKey), p.GetOaepHash(), mine), ImportToken: p.GetImportToken(), PublicKey: spki}})
	heldID(t, err)
	pk, err := ops.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Id: "pay-1"})
	if err != nil {
		t.Fatal(err)
	}
	if active, _ := signer.ParsePublicKey(pk.GetPublicKeyDer()); active.(*ecdsa.PublicKey).Equal(&mine.PublicKey) {
		t.Fatal("the imported key signs for pay-1 without the approval a rotation needs")
	}
}
