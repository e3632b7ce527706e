package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// Dual control against what an outside review tried: each test was a
// way around the quorum before the change that made it fail.

func generations(t *testing.T, e *dualEnv, id string) []*sigilv1.Generation {
	t.Helper()
	k, err := e.keys(opsID).GetKey(context.Background(), &sigilv1.GetKeyRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return k.GetKey().GetGenerations()
}

func maxValue(t *testing.T, e *dualEnv) string {
	t.Helper()
	k, err := e.keys(opsID).GetKey(context.Background(), &sigilv1.GetKeyRequest{Id: "treasury-1"})
	if err != nil {
		t.Fatal(err)
	}
	return k.GetKey().GetEthPolicy().GetMaxValue()
}

func (e *dualEnv) setMaxValue(c sigilv1.KeyServiceClient, max string) error {
	_, err := c.UpdateKeyPolicy(context.Background(), &sigilv1.UpdateKeyPolicyRequest{Id: "treasury-1",
		EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}, MaxValue: max, MaxNonceGap: ptr(uint64(100))}})
	return err
}

const (
	fiveETH    = "5000000000000000000"
	oneETH     = "1000000000000000000"
	hundredETH = "100000000000000000000"
)

// A rotation of a raw key activates its new generation at once: a rule
// holding rotate-now holds it, asked for "now" or not.
func TestRawRotationIsRotateNow(t *testing.T) {
	e := newDualEnv(t)
	ctx := context.Background()
	if _, err := e.keys(opsID).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "treasury-raw", Algorithm: "ES256", Purpose: "raw"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.keys(opsID).RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: "treasury-raw"})
	heldID(t, err)
	if n := len(generations(t, e, "treasury-raw")); n != 1 {
		t.Fatalf("an unapproved rotation made %d generations", n)
	}
}

// A policy change held as not loosening (under a rule on update-policy
// with a smaller quorum) runs only if it still does not loosen the policy
// it replaces: approved after an emergency tightening, it is refused.
func TestStagedPolicyChangeCannotUndoATightening(t *testing.T) {
	e := newDualEnv(t, approvalPolicy+`
  - operation: keys.admin
    keys: ["treasury-*"]
    actions: [update-policy]
    approvers: [spiffe://example.org/officer/*]
    quorum: 1
`)
	ops := e.keys(opsID)
	noop := heldID(t, e.setMaxValue(ops, fiveETH)) // the policy in force: not loosening, quorum 1
	tighten := heldID(t, e.setMaxValue(ops, oneETH))
	if a, err := e.approve(officerA, tighten); err != nil || a.GetState() != "done" {
		t.Fatal(a, err)
	}
	a, err := e.approve(officerB, noop) // stopped by the quorum a loosening asks now (and, were that met, by the guard in the update)
	if err != nil || a.GetState() != "failed" || !strings.Contains(a.GetErrorMessage(), "1 of 2") {
		t.Fatalf("the staged change after the tightening: %v %v", a, err)
	}
	if got := maxValue(t, e); got != oneETH {
		t.Fatalf("max value %s after one approval of a change shown as not loosening", got)
	}
}

// A change judged not to loosen, racing a tightening, cannot overwrite
// it: the judgement is made again inside the atomic update.
func TestPolicyChangeRacingATighteningCannotUndoIt(t *testing.T) {
	e := newDualEnv(t)
	if err := e.setMaxValue(e.keys(opsID), fiveETH); err != nil {
		t.Fatal(err)
	}
	attacker, defender := e.keys(opsID), sigilv1.NewKeyServiceClient(e.Client(t, opsID))
	for round := range 20 {
		var stop atomic.Bool
		done := make(chan struct{}, 2)
		for range 2 {
			go func() {
				defer func() { done <- struct{}{} }()
				for !stop.Load() {
					e.setMaxValue(attacker, fiveETH) // not loosening while the policy is 5 ETH; held once it is 1
				}
			}()
		}
		time.Sleep(3 * time.Millisecond)
		for {
			err := e.setMaxValue(defender, oneETH)
			if status.Code(err) == codes.Aborted {
				continue
			}
			if err != nil {
				t.Fatalf("round %d: tightening: %v", round, err)
			}
			break
		}
		time.Sleep(2 * time.Millisecond)
		stop.Store(true)
		<-done
		<-done
		if got := maxValue(t, e); got != oneETH {
			t.Fatalf("round %d: a change judged not to loosen overwrote the tightening (max %s)", round, got)
		}
		back := heldID(t, e.setMaxValue(attacker, fiveETH)) // the loosening back to 5 ETH (one the spam held, if any), approved: the next round starts loose
		e.approve(officerA, back)
		e.approve(officerB, back)
		if got := maxValue(t, e); got != fiveETH {
			t.Fatalf("round %d: the approved loosening did not run (max %s)", round, got)
		}
	}
}

// An approved request that is not idempotent whose end was not recorded
// (the store failed right after the run) is not run again: it fails, as
// interrupted. Runs: one rotation, not two; and a loosening does not
// come back over a tightening made since.
func TestInterruptedRunIsNotRepeated(t *testing.T) {
	e, flaky := newFlakyEnv(t, 0)
	ctx := context.Background()
	if _, err := e.keys(opsID).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "treasury-raw", Algorithm: "ES256", Purpose: "raw"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.keys(opsID).RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: "treasury-raw", Immediate: true})
	rotation := heldID(t, err)
	loosening := heldID(t, e.setMaxValue(e.keys(opsID), hundredETH))
	for _, id := range []string{rotation, loosening} {
		if _, err := e.approve(officerA, id); err != nil {
			t.Fatal(err)
		}
		flaky.loseEnd.Store(true)
		e.approve(officerB, id)
		flaky.loseEnd.Store(false)
	}
	if err := e.setMaxValue(e.keys(opsID), oneETH); err != nil { // a tightening, after the loosening ran
		t.Fatal(err)
	}
	e.offset.Store(int64(2 * time.Minute)) // the claims lapsed
	for _, id := range []string{rotation, loosening} {
		_, err := e.result(opsID, id)
		if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "interrupted") {
			t.Fatalf("the result of an interrupted run: %v", err)
		}
	}
	if n := len(generations(t, e, "treasury-raw")); n != 2 {
		t.Fatalf("one approved rotation made %d generations", n-1)
	}
	if got := maxValue(t, e); got != oneETH {
		t.Fatalf("the loosening ran again over the tightening: max %s", got)
	}
}

// An approved request not yet claimed (the claim's write failed) can
// still be denied, and then never runs.
func TestApprovedRequestCanBeDeniedBeforeItRuns(t *testing.T) {
	e, flaky := newFlakyEnv(t, 0)
	ctx := context.Background()
	_, err := e.signTx(0, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	e.approve(officerA, id)
	flaky.loseClaim.Store(true)
	a, err := e.approve(officerB, id)
	flaky.loseClaim.Store(false)
	if err != nil || a.GetState() != "approved" {
		t.Fatalf("the quorum, its claim lost: %v %v", a, err)
	}
	if _, err := e.approvals(officerA).Deny(ctx, &sigilv1.DenyRequest{ApprovalId: id, Reason: "stop"}); err != nil {
		t.Fatalf("denying an approved request not claimed: %v", err)
	}
	_, err = e.result(requesterID, id)
	wantCodeOf(t, "its result", err, codes.FailedPrecondition)
	if runs := runsOf(t, e, id); len(runs) != 0 {
		t.Fatalf("a denied request ran: %+v", runs)
	}
}

// The requester is every identity of its certificate: another
// certificate with one of them cannot approve.
func TestRequesterCannotApproveWithASecondCertificate(t *testing.T) {
	e := newDualEnv(t)
	ctx := context.Background()
	officer, _ := url.Parse("spiffe://example.org/officer/treasury")
	both := e.CA.Mint(t, &x509.Certificate{DNSNames: []string{"treasury.internal"}, URIs: []*url.URL{officer}})
	tx := `{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x1bc16d674ec80000","gas":"0x5208","maxFeePerGas":"0x10","maxPriorityFeePerGas":"0x1"}`
	_, err := sigilv1.NewEthereumServiceClient(e.DialAs(t, e.CA, &both)).SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "treasury-1",
		Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(tx)}})
	id := heldID(t, err)
	only := e.CA.Mint(t, &x509.Certificate{URIs: []*url.URL{officer}})
	e.conns["second"] = e.DialAs(t, e.CA, &only)
	_, err = e.approve("second", id)
	wantCodeOf(t, "the requester's officer identity on a second certificate", err, codes.PermissionDenied)
}

// Approval calls spend the caller's quota, and need a rule naming the
// caller; a request for a key that does not exist is answered, not held.
func TestApprovalCallsAreMeteredAndHeldKeysExist(t *testing.T) {
	e := newDualEnv(t, strings.Replace(approvalPolicy, "rules:\n", `rules:
  - identity: spiffe://example.org/limited
    keys: ["*"]
    allow: [keys.read]
    rate: 1/h
    burst: 2
`, 1))
	ctx := context.Background()
	limited := sigilv1.NewApprovalServiceClient(e.Client(t, "spiffe://example.org/limited"))
	var codesSeen []codes.Code
	for range 4 {
		_, err := limited.ListApprovals(ctx, &sigilv1.ListApprovalsRequest{})
		codesSeen = append(codesSeen, status.Code(err))
	}
	if fmt.Sprint(codesSeen) != fmt.Sprint([]codes.Code{codes.OK, codes.OK, codes.ResourceExhausted, codes.ResourceExhausted}) {
		t.Fatalf("ListApprovals under a 1/h burst 2 quota: %v", codesSeen)
	}
	_, err := sigilv1.NewApprovalServiceClient(e.Client(t, "spiffe://example.org/nobody")).ListApprovals(ctx, &sigilv1.ListApprovalsRequest{})
	wantCodeOf(t, "a caller no rule names", err, codes.PermissionDenied)
	_, err = sigilv1.NewEthereumServiceClient(e.conns[requesterID]).SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "treasury-nokey",
		Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(`{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x1bc16d674ec80000","gas":"0x5208","gasPrice":"0x1"}`)}})
	wantCodeOf(t, "a held operation on a key that does not exist", err, codes.NotFound)
}

// What approvers read cannot be forged by the requester: a typed-data
// domain with line breaks and terminal escapes is escaped, and the
// message is shown; the request's own bytes come with it, hashing to
// the hash approvals name.
func TestApproversSeeWhatIsSignedUnforged(t *testing.T) {
	e := newDualEnv(t, approvalPolicy+`
  - operation: eth.sign_typed_data
    keys: ["treasury-*"]
    approvers: [spiffe://example.org/officer/*]
    quorum: 1
`)
	ctx := context.Background()
	doc := `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"chainId","type":"uint256"}],
"Permit":[{"name":"spender","type":"address"},{"name":"value","type":"uint256"}]},"primaryType":"Permit",
"domain":{"name":"Harmless\n  spender:     none\u001b[8m","chainId":1},
"message":{"spender":"0x000000000000000000000000000000000000dEaD","value":"115792089237316195423570985008687907853269984665640564039457584007913129639935"}}`
	_, err := sigilv1.NewEthereumServiceClient(e.conns[requesterID]).SignTypedData(ctx, &sigilv1.SignTypedDataRequest{KeyId: "treasury-1", TypedDataJson: []byte(doc)})
	id := heldID(t, err)
	show, err := e.approvals(officerA).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil {
		t.Fatal(err)
	}
	all := fmt.Sprint(show.GetApproval().GetSummary())
	if strings.ContainsAny(all, "\n\x1b") || !strings.Contains(all, "0x000000000000000000000000000000000000dEaD") || !strings.Contains(all, "chain 1,") {
		t.Fatalf("the summary: %s", all)
	}
	held := &sigilv1.SignTypedDataRequest{}
	if err := proto.Unmarshal(show.GetRequest(), held); err != nil || string(held.GetTypedDataJson()) != doc || sha256Hex(show.GetRequest()) != show.GetApproval().GetPayloadSha256() {
		t.Fatalf("the request's bytes as approvers get them: %v", err)
	}
}

// The audit trail ties what ran to what was approved: every record of a
// held request carries the hash its approvals name.
func TestAuditRecordsNameTheApprovedHash(t *testing.T) {
	e := newDualEnv(t)
	_, err := e.signTx(1, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	e.approve(officerA, id)
	a, err := e.approve(officerB, id)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range auditRecords(t, e.AuditLog) {
		if r.ApprovalID == id {
			n++
			if r.RequestSHA256 != a.GetPayloadSha256() {
				t.Fatalf("%s record of %s: request_sha256 %q, approved %s", r.Outcome, r.Method, r.RequestSHA256, a.GetPayloadSha256())
			}
		}
	}
	if n < 6 { // held, 2 shows, 2 approvals, the run
		t.Fatalf("%d records name the request", n)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func disabled(t *testing.T, e *dualEnv, id string) bool {
	t.Helper()
	k, err := e.keys(opsID).GetKey(context.Background(), &sigilv1.GetKeyRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return k.GetKey().GetDisabled()
}

// An approved enable whose end was lost is not run again after its
// claim lapses: it would undo an emergency disable approved in between.
func TestInterruptedEnableDoesNotUndoALaterDisable(t *testing.T) {
	e, flaky := newFlakyEnv(t, 0, approvalPolicy+`
  - operation: keys.admin
    keys: ["treasury-*"]
    actions: [enable]
    approvers: [spiffe://example.org/officer/*]
    quorum: 2
`)
	ctx := context.Background()
	ops := e.keys(opsID)
	quorum := func(id string, lose bool) *sigilv1.Approval {
		if _, err := e.approve(officerA, id); err != nil {
			t.Fatal(err)
		}
		flaky.loseEnd.Store(lose)
		a, _ := e.approve(officerB, id)
		flaky.loseEnd.Store(false)
		return a
	}
	// 1. the key is disabled by a quorum
	_, err := ops.DisableKey(ctx, &sigilv1.DisableKeyRequest{Id: "treasury-1"})
	quorum(heldID(t, err), false)
	if !disabled(t, e, "treasury-1") {
		t.Fatal("setup: not disabled")
	}
	// 2. an approved enable runs; its end is lost (store blip / kill -9)
	_, err = ops.EnableKey(ctx, &sigilv1.EnableKeyRequest{Id: "treasury-1"})
	enable := heldID(t, err)
	quorum(enable, true)
	if disabled(t, e, "treasury-1") {
		t.Fatal("setup: the enable did not take effect")
	}
	// 3. incident: the quorum disables the key again
	_, err = ops.DisableKey(ctx, &sigilv1.DisableKeyRequest{Id: "treasury-1"})
	if a := quorum(heldID(t, err), false); a.GetState() != "done" {
		t.Fatalf("emergency disable: %v", a)
	}
	if !disabled(t, e, "treasury-1") {
		t.Fatal("emergency disable did not take effect")
	}
	// 4. the enable's claim lapses; the requester (or any sweep) re-runs it
	e.offset.Store(int64(2 * time.Minute))
	_, err = e.result(opsID, enable)
	wantCodeOf(t, "the result of the interrupted enable", err, codes.Aborted)
	if !disabled(t, e, "treasury-1") {
		t.Fatalf("the re-run of an interrupted EnableKey re-enabled a key a quorum disabled since (runs: %d)", len(runsOf(t, e, enable)))
	}
}

// A request whose run started cannot be denied, even once its claim
// lapsed: it may have taken effect (here it did), and "denied" would say
// it never ran.
func TestStartedRunCannotBeDenied(t *testing.T) {
	e, flaky := newFlakyEnv(t, 0)
	ctx := context.Background()
	id := heldID(t, e.setMaxValue(e.keys(opsID), hundredETH))
	if _, err := e.approve(officerA, id); err != nil {
		t.Fatal(err)
	}
	flaky.loseEnd.Store(true)
	e.approve(officerB, id)
	flaky.loseEnd.Store(false)
	e.offset.Store(int64(2 * time.Minute))
	_, err := e.approvals(officerA).Deny(ctx, &sigilv1.DenyRequest{ApprovalId: id, Reason: "changed my mind"})
	wantCodeOf(t, "denying a request whose run started", err, codes.FailedPrecondition)
	_, err = e.result(opsID, id)
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "may have taken effect") || maxValue(t, e) != hundredETH {
		t.Fatalf("the result of the interrupted loosening: %v (max %s)", err, maxValue(t, e))
	}
}

// A CreateKey the key service would refuse (here: an Any policy no
// purpose takes, which would also hide the request from its summary) is
// refused, not held.
func TestCreateKeyTheServiceRefusesIsNotHeld(t *testing.T) {
	e := newDualEnv(t, approvalPolicy+`
  - operation: keys.admin
    keys: ["treasury-9"]
    actions: [create]
    approvers: [spiffe://example.org/officer/*]
    quorum: 1
`)
	ctx := context.Background()
	_, err := e.keys(opsID).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "treasury-9", Algorithm: "ES256K", Purpose: "eth",
		EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1, 5, 137}}, Description: "harmless",
		Policy: &anypb.Any{TypeUrl: "type.googleapis.com/evil.Nope", Value: []byte{1, 2, 3}}})
	wantCodeOf(t, "a creation with an Any policy no purpose takes", err, codes.InvalidArgument)
	_, err = e.keys(opsID).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "treasury-9", Algorithm: "ES256K", Purpose: "eth",
		EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1, 5, 137}}, Description: "harmless"})
	show, err := e.approvals(officerA).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: heldID(t, err)})
	if err != nil || !strings.Contains(fmt.Sprint(show.GetApproval().GetSummary()), "137") {
		t.Fatalf("a valid creation's summary: %v %v", show, err)
	}
}

// Approval calls spend the quota of the rule that lets the caller
// approve, not of an earlier unrated rule naming it for something else.
func TestApprovalCallsSpendTheApproversRule(t *testing.T) {
	e := newDualEnv(t, strings.Replace(approvalPolicy, "rules:\n", `rules:
  - identity: spiffe://example.org/officer/*
    keys: ["public-*"]
    allow: [keys.read]
  - identity: spiffe://example.org/officer/*
    keys: ["treasury-*"]
    allow: [approvals.approve]
    rate: 1/h
    burst: 2
`, 1))
	ctx := context.Background()
	ok := 0
	for range 20 {
		if _, err := e.approvals(officerA).ListApprovals(ctx, &sigilv1.ListApprovalsRequest{}); err == nil {
			ok++
		}
	}
	if ok != 2 {
		t.Errorf("%d of 20 ListApprovals passed a 1/h burst 2 approvals rule", ok)
	}
}

// An approval rule made stricter between hold and run stops the run: the
// approvals must make the quorum the rules in force ask.
func TestRuleTightenedSinceHoldStopsTheRun(t *testing.T) {
	e := newDualEnv(t)
	_, err := e.signTx(0, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	if _, err := e.approve(officerA, id); err != nil {
		t.Fatal(err)
	}
	stricter := strings.Replace(approvalPolicy, "    quorum: 2\n    expires: 1h\n", "    quorum: 3\n    expires: 1h\n", 1)
	if stricter == approvalPolicy {
		t.Fatal("the rule is not where the test expects it")
	}
	os.WriteFile(filepath.Join(filepath.Dir(e.AuditLog), "policy.yaml"), []byte(stricter), 0o600)
	if err := e.Authz.Reload(); err != nil {
		t.Fatal(err)
	}
	a, err := e.approve(officerB, id)
	if err != nil || a.GetState() != "failed" || !strings.Contains(a.GetErrorMessage(), "2 of 3") {
		t.Fatalf("the old quorum under a stricter rule: %v %v", a, err)
	}
	if runs := runsOf(t, e, id); len(runs) != 1 || runs[0].Outcome != "failed" {
		t.Fatalf("the run: %+v", runs)
	}
}

// Revoking a JWT key's signing generation activates the next at once: a
// rule holding rotate-now holds it; a revocation that activates nothing
// (a raw key's) it does not.
func TestRevokingTheSigningGenerationIsRotateNow(t *testing.T) {
	e := newDualEnv(t, strings.Replace(approvalPolicy, "actions: [revoke, loosen-policy, schedule-deletion, disable, rotate-now]", "actions: [rotate-now]", 1))
	ctx := context.Background()
	for _, k := range []*sigilv1.CreateKeyRequest{{Id: "treasury-jwt", Algorithm: "ES256", Purpose: "jwt"}, {Id: "treasury-raw", Algorithm: "ES256", Purpose: "raw"}} {
		if _, err := e.keys(opsID).CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.keys(opsID).RevokeGeneration(ctx, &sigilv1.RevokeGenerationRequest{Id: "treasury-jwt", Generation: 1})
	heldID(t, err)
	if gs := generations(t, e, "treasury-jwt"); gs[0].GetState() != "active" {
		t.Fatalf("the JWT key's signing generation, unapproved: %s", gs[0].GetState())
	}
	if _, err := e.keys(opsID).RevokeGeneration(ctx, &sigilv1.RevokeGenerationRequest{Id: "treasury-raw", Generation: 1}); err != nil {
		t.Fatalf("a raw key's revocation under a rule on rotate-now only: %v", err)
	}
}

// A certificate that merely shares a CN with the requester's certificate
// is not the requester: the request belongs to the identity the access
// rule allowed (the DNS SAN here), typed and exact. The look-alike can
// neither list nor read the held request, nor fetch what it minted once
// approved; another certificate of the requester's own identity can.
func TestLookAlikeCertificateIsNotTheRequester(t *testing.T) {
	e := newDualEnv(t, strings.Replace(approvalPolicy, "rules:\n", `rules:
  - identity: spiffe://example.org/low
    keys: ["*"]
    allow: [keys.read]
`, 1))
	ctx := context.Background()
	requester := e.CA.Mint(t, &x509.Certificate{Subject: pkix.Name{CommonName: "shared-cn"}, DNSNames: []string{"treasury.internal"}})
	low, _ := url.Parse("spiffe://example.org/low")
	lookAlike := e.CA.Mint(t, &x509.Certificate{Subject: pkix.Name{CommonName: "shared-cn"}, URIs: []*url.URL{low}})
	e.conns["requester"], e.conns["look-alike"] = e.DialAs(t, e.CA, &requester), e.DialAs(t, e.CA, &lookAlike)
	tx := `{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x1bc16d674ec80000","gas":"0x5208","maxFeePerGas":"0x10","maxPriorityFeePerGas":"0x1"}`
	_, err := sigilv1.NewEthereumServiceClient(e.conns["requester"]).SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "treasury-1",
		Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(tx)}})
	id := heldID(t, err)
	list, err := e.approvals("look-alike").ListApprovals(ctx, &sigilv1.ListApprovalsRequest{})
	if err != nil || len(list.GetApprovals()) != 0 {
		t.Fatalf("the look-alike lists %v (%v)", list.GetApprovals(), err)
	}
	_, err = e.approvals("look-alike").GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
	wantCodeOf(t, "the look-alike reading the request", err, codes.PermissionDenied)
	for _, officer := range []string{officerA, officerB} {
		if _, err := e.approve(officer, id); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.result("look-alike", id)
	wantCodeOf(t, "the look-alike fetching the result", err, codes.PermissionDenied)
	if _, err := e.result(requesterID, id); err != nil { // the requester's identity, on another certificate
		t.Fatalf("the requester's own identity fetching the result: %v", err)
	}
}

// A JWK Set creation an approval rule holds: one the requester's rule
// could not make is answered, never held (approvers are not asked about
// it); one it could runs, once approved, as the requester (its rule is
// checked at the run).
func TestHeldJWKSetCreationIsTheRequesters(t *testing.T) {
	e := newDualEnv(t, `
rules:
  - identity: spiffe://example.org/tenant-a
    keys: ["tenant-a-*"]
    allow: [jwks.admin, keys.read]
  - identity: spiffe://example.org/officer/*
    keys: ["*"]
    allow: [approvals.approve, keys.read]
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
approvals:
  - operation: jwks.admin
    approvers: [spiffe://example.org/officer/*]
    quorum: 1
`)
	ctx := context.Background()
	tenant := e.Client(t, "spiffe://example.org/tenant-a")
	e.conns["tenant"] = tenant
	jc := sigilv1.NewJWTServiceClient(tenant)
	_, err := jc.CreateJWKSet(ctx, &sigilv1.CreateJWKSetRequest{Name: "tenant-b", KeyPatterns: []string{"*"}})
	wantCodeOf(t, "a set beyond the requester's keys", err, codes.PermissionDenied)
	_, err = jc.CreateJWKSet(ctx, &sigilv1.CreateJWKSetRequest{Name: "tenant-a-web"})
	id := heldID(t, err)
	if _, err := e.approve(officerA, id); err != nil {
		t.Fatal(err)
	}
	res, err := e.result("tenant", id)
	if err != nil {
		t.Fatalf("the approved set creation: %v", err)
	}
	out := &sigilv1.CreateJWKSetResponse{}
	if err := res.GetResult().UnmarshalTo(out); err != nil || out.GetSet().GetName() != "tenant-a-web" {
		t.Fatalf("the approved set: %v %v", out, err)
	}
}
