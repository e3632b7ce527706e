package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// SignJWTBatch: each item minted as SignJWT would mint it alone: a
// token of a key the identity may use verifies with its JWK; an item on
// another key is PermissionDenied, bad claims InvalidArgument, each
// alone; every item is audited; a batch of none or too many is refused.
func TestSignJWTBatchItemsStandAlone(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/auth
    keys: ["mine-*"]
    allow: [sign.jwt]
`)
	ctx := context.Background()
	ops := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops"))
	for _, id := range []string{"mine-jwt", "theirs-jwt"} {
		if _, err := ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256", Purpose: "jwt"}); err != nil {
			t.Fatal(err)
		}
	}
	pk, err := ops.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Id: "mine-jwt"})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := signer.ParsePublicKey(pk.GetPublicKeyDer())
	before := auditLines(t, e.AuditLog)
	var items []*sigilv1.SignJWTRequest
	for i := range 300 {
		switch {
		case i == 150:
			items = append(items, &sigilv1.SignJWTRequest{KeyId: "mine-jwt", ClaimsJson: []byte(`["not", "an object"]`)})
		case i%3 == 1:
			items = append(items, &sigilv1.SignJWTRequest{KeyId: "theirs-jwt", ClaimsJson: []byte(`{"sub":"x"}`)})
		default:
			items = append(items, &sigilv1.SignJWTRequest{KeyId: "mine-jwt", ClaimsJson: fmt.Appendf(nil, `{"sub":"user-%d"}`, i)})
		}
	}
	jwts := sigilv1.NewJWTServiceClient(e.Client(t, "spiffe://example.org/auth"))
	resp, err := jwts.SignJWTBatch(ctx, &sigilv1.SignJWTBatchRequest{Items: items})
	if err != nil || len(resp.GetResults()) != len(items) {
		t.Fatalf("SignJWTBatch: %v, %d results", err, len(resp.GetResults()))
	}
	minted := 0
	for i, r := range resp.GetResults() {
		switch {
		case i == 150:
			if r.GetError().GetCode() != "InvalidArgument" {
				t.Errorf("the bad item: %v", r)
			}
		case i%3 == 1:
			if r.GetError().GetCode() != "PermissionDenied" {
				t.Errorf("item %d on a key the identity may not use: %v", i, r)
			}
		default:
			tok, err := jose.ParseSignedCompact(r.GetResponse().GetToken(), []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatalf("item %d: %v", i, err)
			}
			claims, err := tok.Verify(pub)
			if err != nil || !strings.Contains(string(claims), fmt.Sprintf(`"sub":"user-%d"`, i)) {
				t.Fatalf("item %d: the token does not verify as its own: %v %s", i, err, claims)
			}
			minted++
		}
	}
	if minted != 199 {
		t.Errorf("%d tokens minted, want 199", minted)
	}
	if n := auditLines(t, e.AuditLog) - before; n != len(items)+1 {
		t.Errorf("%d audit records for a batch of %d (want the batch's and one per item)", n, len(items))
	}
	for _, bad := range []*sigilv1.SignJWTBatchRequest{{}, {Items: make([]*sigilv1.SignJWTRequest, 1001)}} {
		if _, err := jwts.SignJWTBatch(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("a batch of %d items: %v", len(bad.GetItems()), err)
		}
	}
}
