package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"os"
	"strings"
	"testing"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
	"github.com/sigil-hsm/sigil/signer"
)

const batchPolicy = `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/batcher
    keys: ["mine-*"]
    allow: [sign.raw]
`

// A batch of 1000 signs each item as Sign would: a bad item fails alone
// (InvalidArgument), items on a key the identity may not use fail alone
// (PermissionDenied), the rest sign and verify; every item has its audit
// record.
func TestSignBatchItemsStandAlone(t *testing.T) {
	e := servertest.NewMTLS(t, batchPolicy)
	ctx := context.Background()
	ops := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops"))
	for _, id := range []string{"mine-1", "theirs-1"} {
		if _, err := ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256"}); err != nil {
			t.Fatal(err)
		}
	}
	pk, err := ops.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Id: "mine-1"})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := signer.ParsePublicKey(pk.GetPublicKeyDer())
	before := auditLines(t, e.AuditLog)
	var items []*sigilv1.SignRequest
	for i := range 1000 {
		d := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		switch {
		case i == 500:
			items = append(items, &sigilv1.SignRequest{KeyId: "mine-1", Input: &sigilv1.SignRequest_Digest{Digest: d[:5]}})
		case i%2 == 1:
			items = append(items, &sigilv1.SignRequest{KeyId: "theirs-1", Input: &sigilv1.SignRequest_Digest{Digest: d[:]}})
		default:
			items = append(items, &sigilv1.SignRequest{KeyId: "mine-1", Input: &sigilv1.SignRequest_Digest{Digest: d[:]}})
		}
	}
	resp, err := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/batcher")).SignBatch(ctx, &sigilv1.SignBatchRequest{Items: items})
	if err != nil || len(resp.GetResults()) != 1000 {
		t.Fatalf("SignBatch: %v, %d results", err, len(resp.GetResults()))
	}
	signed := 0
	for i, r := range resp.GetResults() {
		switch {
		case i == 500:
			if r.GetError().GetCode() != "InvalidArgument" {
				t.Errorf("the bad item: %v", r)
			}
		case i%2 == 1:
			if r.GetError().GetCode() != "PermissionDenied" || strings.Contains(r.GetError().GetMessage(), "theirs") {
				t.Errorf("item %d on a key the identity may not use: %v", i, r)
			}
		default:
			d := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
			if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d[:], r.GetResponse().GetSignature()) {
				t.Fatalf("item %d: the signature does not verify: %v", i, r)
			}
			signed++
		}
	}
	if signed != 499 {
		t.Errorf("%d items signed, want 499", signed)
	}
	if n := auditLines(t, e.AuditLog) - before; n != 1001 {
		t.Errorf("%d audit records for a batch of 1000 (want the batch's and one per item)", n)
	}
	for _, bad := range []*sigilv1.SignBatchRequest{{}, {Items: make([]*sigilv1.SignRequest, 1001)}} {
		if _, err := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/batcher")).SignBatch(ctx, bad); err == nil {
			t.Errorf("a batch of %d items was taken", len(bad.GetItems()))
		}
	}
}

func auditLines(t *testing.T, path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}
