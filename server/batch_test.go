package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/authz"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server"
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

// The quota is charged per item, decided once for a key's items: four
// batches of 20 racing on a burst of 30 sign exactly 30 items in all, the
// other 50 are ResourceExhausted alone, every item is audited, and a
// single Sign afterwards finds the quota spent.
func TestSignBatchChargesTheQuotaPerItem(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/batcher
    keys: ["mine-*"]
    allow: [sign.raw]
    rate: 1/h
    burst: 30
`)
	ctx := context.Background()
	ops := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops"))
	if _, err := ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "mine-1", Algorithm: "ES256"}); err != nil {
		t.Fatal(err)
	}
	client := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/batcher"))
	before := auditLines(t, e.AuditLog)
	d := sha256.Sum256([]byte("charged"))
	var items []*sigilv1.SignRequest
	for range 20 {
		items = append(items, &sigilv1.SignRequest{KeyId: "mine-1", Input: &sigilv1.SignRequest_Digest{Digest: d[:]}})
	}
	type tally struct{ signed, throttled int }
	out := make(chan tally, 4)
	for range 4 {
		go func() {
			var n tally
			resp, err := client.SignBatch(ctx, &sigilv1.SignBatchRequest{Items: items})
			if err != nil {
				t.Error(err)
			}
			for _, r := range resp.GetResults() {
				switch {
				case r.GetResponse() != nil:
					n.signed++
				case r.GetError().GetCode() == "ResourceExhausted":
					n.throttled++
				default:
					t.Errorf("item: %v", r)
				}
			}
			out <- n
		}()
	}
	var all tally
	for range 4 {
		n := <-out
		all.signed, all.throttled = all.signed+n.signed, all.throttled+n.throttled
	}
	if all.signed != 30 || all.throttled != 50 {
		t.Errorf("%d items signed and %d throttled, want 30 and 50", all.signed, all.throttled)
	}
	if n := auditLines(t, e.AuditLog) - before; n != 84 {
		t.Errorf("%d audit records, want 84 (each batch's and each item's)", n)
	}
	if _, err := client.Sign(ctx, items[0]); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Sign after the batches spent the quota: %v", err)
	}
}

// Items on a key an approval rule holds are each held as a Sign of their
// own would be (an approval request each); the batch's other items sign.
func TestSignBatchHoldsItemsAnApprovalRuleCovers(t *testing.T) {
	e := servertest.NewMTLS(t, batchPolicy+`
  - identity: spiffe://example.org/officer
    keys: ["*"]
    allow: [approvals.approve, keys.read]
approvals:
  - operation: sign.raw
    keys: ["mine-held"]
    approvers: [spiffe://example.org/officer]
    quorum: 1
`)
	ctx := context.Background()
	ops := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops"))
	for _, id := range []string{"mine-held", "mine-free"} {
		if _, err := ops.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256"}); err != nil {
			t.Fatal(err)
		}
	}
	var items []*sigilv1.SignRequest
	for i := range 10 {
		id := "mine-free"
		if i%2 == 0 {
			id = "mine-held"
		}
		d := sha256.Sum256([]byte{byte(i)})
		items = append(items, &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: d[:]}})
	}
	same := sha256.Sum256([]byte("asked four times at once"))
	for range 4 { // items 10 to 13: one request, held once
		items = append(items, &sigilv1.SignRequest{KeyId: "mine-held", Input: &sigilv1.SignRequest_Digest{Digest: same[:]}})
	}
	resp, err := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/batcher")).SignBatch(ctx, &sigilv1.SignBatchRequest{Items: items})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for i, r := range resp.GetResults() {
		held := r.GetError().GetCode() == "FailedPrecondition" && strings.Contains(r.GetError().GetMessage(), "approval required")
		if (i%2 == 0 || i >= 10) != held || i%2 == 1 && i < 10 && len(r.GetResponse().GetSignature()) == 0 {
			t.Errorf("item %d (%s): %v", i, items[i].GetKeyId(), r)
		}
		if i >= 10 {
			ids[strings.Fields(r.GetError().GetMessage())[3]] = true // "approval required: request ID waits …"
		}
	}
	if len(ids) != 1 {
		t.Errorf("four identical items held as %d requests: %v", len(ids), ids)
	}
	list, err := sigilv1.NewApprovalServiceClient(e.Client(t, "spiffe://example.org/officer")).ListApprovals(ctx, &sigilv1.ListApprovalsRequest{})
	if err != nil || len(list.GetApprovals()) != 6 {
		t.Fatalf("approval requests: %d, %v; want one per held item, the four identical ones one, 6", len(list.GetApprovals()), err)
	}
}

// The audit log fails while a batch of 1000 is being signed (its file
// replaced by a directory): no signature leaves whose record is not in
// the log. Records written before the failure are read through a hard
// link to the file.
func TestSignBatchAnswersNothingOffTheRecord(t *testing.T) {
	e := servertest.NewMTLS(t, batchPolicy)
	ctx := context.Background()
	if _, err := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops")).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "mine-1", Algorithm: "ES256"}); err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(t.TempDir(), "kept.jsonl")
	if err := os.Link(e.AuditLog, kept); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("off the record"))
	var items []*sigilv1.SignRequest
	for range 1000 {
		items = append(items, &sigilv1.SignRequest{KeyId: "mine-1", Input: &sigilv1.SignRequest_Digest{Digest: d[:]}})
	}
	client := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/batcher"))
	done := make(chan *sigilv1.SignBatchResponse)
	go func() {
		resp, err := client.SignBatch(metadata.AppendToOutgoingContext(ctx, "x-request-id", "batch-off-the-record"), &sigilv1.SignBatchRequest{Items: items})
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Errorf("SignBatch with the audit log failing: %v", err)
		}
		done <- resp
	}()
	time.Sleep(20 * time.Millisecond)
	if err := os.Remove(e.AuditLog); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.AuditLog, 0o700); err != nil {
		t.Fatal(err)
	}
	resp := <-done
	signed := 0
	for _, r := range resp.GetResults() {
		if len(r.GetResponse().GetSignature()) > 0 {
			signed++
		} else if c := r.GetError().GetCode(); c != "Unavailable" {
			t.Errorf("an item failed %s, not Unavailable", c)
		}
	}
	b, err := os.ReadFile(kept)
	if err != nil {
		t.Fatal(err)
	}
	recorded := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, `"request_id":"batch-off-the-record"`) && strings.Contains(line, `"operation":"sign.raw"`) && strings.Contains(line, `"outcome":"allowed"`) {
			recorded++
		}
	}
	if signed > 0 && signed > recorded-1 { // the batch's own record is one of them
		t.Errorf("%d signatures answered, %d item records written", signed, recorded-1)
	}
	t.Logf("%d of 1000 items answered with a signature; %d allowed records written", signed, recorded)
}

const reloadBase = `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/officer
    keys: ["*"]
    allow: [approvals.approve, keys.read]
  - identity: spiffe://example.org/batcher
    keys: ["mine-*"]
    allow: [sign.raw, sign.jwt]
    rate: 1/h
    burst: 4
`

const reloadHeld = reloadBase + `
approvals:
  - operation: sign.raw
    keys: ["mine-1"]
    approvers: [spiffe://example.org/officer]
    quorum: 1
`

// inStack reports whether fn is on the calling goroutine's stack: a
// fault hook's way to strike at one step only.
func inStack(fn string) bool {
	buf := make([]byte, 1<<16)
	return strings.Contains(string(buf[:runtime.Stack(buf, false)]), fn)
}

// An approval rule loaded between a batch's grouping and its group's
// decision (the policy reloaded while the group is admitted): each item
// is held for approval, as a single Sign would be, and its quota charged
// once (four items on a burst of four are all held, none throttled).
func TestSignBatchHoldsItemsUnderARuleLoadedMidBatch(t *testing.T) {
	dir := t.TempDir()
	pf := filepath.Join(dir, "policy.yaml")
	os.WriteFile(pf, []byte(reloadBase), 0o600)
	az, err := authz.Load(pf)
	if err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	now := func() time.Time {
		if armed.Load() && inStack("admitGroup") && armed.CompareAndSwap(true, false) {
			os.WriteFile(pf, []byte(reloadHeld), 0o600)
			if err := az.Reload(); err != nil {
				panic(err)
			}
		}
		return time.Now()
	}
	e := servertest.NewMTLS(t, reloadBase, func(o *server.Options) { o.Authz, o.Now = az, now })
	ctx := context.Background()
	if _, err := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops")).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "mine-1", Algorithm: "ES256"}); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	var items []*sigilv1.SignRequest
	for range 4 {
		items = append(items, &sigilv1.SignRequest{KeyId: "mine-1", Input: &sigilv1.SignRequest_Digest{Digest: d[:]}})
	}
	armed.Store(true)
	resp, err := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/batcher")).SignBatch(ctx, &sigilv1.SignBatchRequest{Items: items})
	if err != nil {
		t.Fatal(err)
	}
	if armed.Load() {
		t.Fatal("the reload did not happen")
	}
	for i, r := range resp.GetResults() {
		t.Logf("item %d: %v", i, r.GetError())
		if r.GetError().GetCode() != "FailedPrecondition" {
			t.Errorf("item %d: %v; want held for approval (burst 4, 4 items: a single Sign each would be held)", i, r.GetError())
		}
	}
}

// A panic in a handler while a batch's grouped items run (the clock
// SignJWT stamps with panics once): that item fails alone, the server
// survives, the other items are answered.
func TestSignJWTBatchSurvivesAPanickingItem(t *testing.T) {
	var n atomic.Int64
	now := func() time.Time {
		if inStack("runItem") && n.Add(1) == 2 {
			panic("boom")
		}
		return time.Now()
	}
	e := servertest.NewMTLS(t, strings.Replace(reloadBase, "burst: 4", "burst: 1000", 1), func(o *server.Options) { o.Now = now })
	ctx := context.Background()
	if _, err := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops")).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "mine-j", Algorithm: "ES256", Purpose: "jwt"}); err != nil {
		t.Fatal(err)
	}
	var items []*sigilv1.SignJWTRequest
	for range 10 {
		items = append(items, &sigilv1.SignJWTRequest{KeyId: "mine-j", ClaimsJson: []byte(`{"sub":"a"}`)})
	}
	c := sigilv1.NewJWTServiceClient(e.Client(t, "spiffe://example.org/batcher"))
	resp, err := c.SignJWTBatch(ctx, &sigilv1.SignJWTBatchRequest{Items: items})
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, r := range resp.GetResults() {
		if r.GetError() != nil {
			bad++
			t.Logf("%v", r.GetError())
		}
	}
	if bad != 1 {
		t.Errorf("%d items failed, want 1", bad)
	}
	if _, err := c.SignJWT(ctx, items[0]); err != nil {
		t.Errorf("after: %v", err)
	}
}

// An item naming another namespace's key ("other/mine-1") fails alone,
// InvalidArgument, as a Sign of its own would; the batch's other item
// signs; each item has its record.
func TestSignBatchItemNamingANamespaceFailsAlone(t *testing.T) {
	e := servertest.NewMTLS(t, batchPolicy)
	ctx := context.Background()
	if _, err := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops")).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "mine-1", Algorithm: "ES256"}); err != nil {
		t.Fatal(err)
	}
	before := auditLines(t, e.AuditLog)
	d := sha256.Sum256([]byte("placed"))
	resp, err := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/batcher")).SignBatch(ctx, &sigilv1.SignBatchRequest{Items: []*sigilv1.SignRequest{
		{KeyId: "other/mine-1", Input: &sigilv1.SignRequest_Digest{Digest: d[:]}},
		{KeyId: "mine-1", Input: &sigilv1.SignRequest_Digest{Digest: d[:]}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetResults(); r[0].GetError().GetCode() != "InvalidArgument" || len(r[1].GetResponse().GetSignature()) == 0 {
		t.Fatalf("results: %v", r)
	}
	if n := auditLines(t, e.AuditLog) - before; n != 3 {
		t.Errorf("%d audit records, want 3 (the batch's and each item's)", n)
	}
}
