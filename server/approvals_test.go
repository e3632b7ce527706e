package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/server/servertest"
)

const approvalPolicy = `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: dns:treasury.internal
    keys: ["treasury-*"]
    allow: [eth.sign_tx, eth.sign_typed_data, keys.read]
  - identity: spiffe://example.org/officer/*
    keys: ["treasury-*"]
    allow: [approvals.approve, keys.read]
  - identity: spiffe://example.org/bystander
    keys: ["*"]
    allow: [keys.read]
approvals:
  - operation: eth.sign_tx
    keys: ["treasury-*"]
    when: {value_gte: "1000000000000000000"}
    approvers: [spiffe://example.org/officer/*]
    quorum: 2
    expires: 1h
  - operation: eth.sign_tx
    keys: ["treasury-*"]
    when: {replacement: true}
    approvers: [spiffe://example.org/officer/*]
    quorum: 1
  - operation: keys.admin
    keys: ["treasury-*"]
    actions: [revoke, loosen-policy, schedule-deletion, disable, rotate-now]
    approvers: [spiffe://example.org/officer/*]
    quorum: 2
`

// Identities of the dual-control tests.
const (
	requesterID = "dns:treasury.internal"
	officerA    = "spiffe://example.org/officer/alice"
	officerB    = "spiffe://example.org/officer/bob"
	opsID       = "spiffe://example.org/ops"
)

// dualEnv is a server with approvalPolicy and a clock the test moves.
type dualEnv struct {
	*servertest.MTLS
	offset atomic.Int64 // added to the wall clock
	conns  map[string]*grpc.ClientConn
	addr   string // the treasury key's address
}

func newDualEnv(t *testing.T, policy ...string) *dualEnv {
	return newDualEnvWith(t, append(policy, approvalPolicy)[0])
}

// newDualEnvWith runs the server with policy and opts.
func newDualEnvWith(t *testing.T, policy string, opts ...func(*server.Options)) *dualEnv {
	e := &dualEnv{conns: map[string]*grpc.ClientConn{}}
	e.MTLS = servertest.NewMTLS(t, policy, append([]func(*server.Options){func(o *server.Options) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }
	}}, opts...)...)
	for _, id := range []string{requesterID, officerA, officerB, opsID, "spiffe://example.org/bystander"} {
		e.conns[id] = e.Client(t, strings.TrimPrefix(id, "dns:")) // a DNS SAN is issued bare
	}
	k, err := e.keys(opsID).CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: "treasury-1", Algorithm: "ES256K", Purpose: "eth",
		EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}, MaxValue: "5000000000000000000", MaxNonceGap: ptr(uint64(100))}})
	if err != nil {
		t.Fatal(err)
	}
	e.addr = k.GetKey().GetAddress()
	return e
}

func ptr[T any](v T) *T { return &v }

func (e *dualEnv) keys(id string) sigilv1.KeyServiceClient {
	return sigilv1.NewKeyServiceClient(e.conns[id])
}
func (e *dualEnv) approvals(id string) sigilv1.ApprovalServiceClient {
	return sigilv1.NewApprovalServiceClient(e.conns[id])
}

// signTx asks for a transaction of value wei with nonce to a fixed
// recipient, as the treasury client.
func (e *dualEnv) signTx(nonce uint64, value string, feeCap string) (*sigilv1.SignTransactionResponse, error) {
	tx := fmt.Sprintf(`{"chainId":"0x1","nonce":"0x%x","to":"0x3535353535353535353535353535353535353535","value":"%s","gas":"0x5208","maxFeePerGas":"%s","maxPriorityFeePerGas":"0x1"}`, nonce, value, feeCap)
	return sigilv1.NewEthereumServiceClient(e.conns[requesterID]).SignTransaction(context.Background(),
		&sigilv1.SignTransactionRequest{KeyId: "treasury-1", Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(tx)}})
}

// heldID is the approval ID a held request's error names; it fails the
// test if err is not that answer.
func heldID(t *testing.T, err error) string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("want the request held (FailedPrecondition), got %v", err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == "APPROVAL_REQUIRED" {
			id := info.GetMetadata()["approval_id"]
			if !strings.Contains(st.Message(), id) {
				t.Fatalf("the message does not name approval %s: %s", id, st.Message())
			}
			return id
		}
	}
	t.Fatalf("held without an APPROVAL_REQUIRED detail: %v", err)
	return ""
}

func (e *dualEnv) approve(who, id string) (*sigilv1.Approval, error) {
	ctx := context.Background()
	got, err := e.approvals(who).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil {
		return nil, err
	}
	resp, err := e.approvals(who).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: got.GetApproval().GetPayloadSha256()})
	return resp.GetApproval(), err
}

func (e *dualEnv) result(who, id string) (*sigilv1.GetApprovalResultResponse, error) {
	return e.approvals(who).GetApprovalResult(context.Background(), &sigilv1.GetApprovalResultRequest{ApprovalId: id})
}

// wantCodeOf fails the test unless err has code want.
func wantCodeOf(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

// A high-value transaction is held, not signed; one approval does not
// run it; the second does, once; its requester fetches a transaction
// signed by the key. Every wrong approval is refused with its own code.
func TestHighValueTransactionNeedsTwoApprovals(t *testing.T) {
	e := newDualEnv(t)
	ctx := context.Background()
	if _, err := e.signTx(0, "0x1", "0x10"); err != nil {
		t.Fatalf("a low-value transaction: %v", err)
	}
	_, err := e.signTx(1, "0x1bc16d674ec80000", "0x10") // 2 ETH
	id := heldID(t, err)
	if _, err2 := e.signTx(1, "0x1bc16d674ec80000", "0x10"); heldID(t, err2) != id {
		t.Fatal("a retry of the held request made a second one")
	}
	show, err := e.approvals(officerA).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil {
		t.Fatal(err)
	}
	summary := map[string]string{}
	for _, f := range show.GetApproval().GetSummary() {
		summary[f.GetName()] = f.GetValue()
	}
	if summary["value"] != "2 ETH (2000000000000000000 wei)" || summary["to"] != "0x3535353535353535353535353535353535353535" ||
		summary["chain"] != "1" || summary["nonce"] != "1" || summary["key"] != "treasury-1" || show.GetApproval().GetState() != "pending" {
		t.Fatalf("summary: %v (%v)", summary, show.GetApproval())
	}
	sum := show.GetApproval().GetPayloadSha256()

	_, err = e.approvals(requesterID).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: sum})
	wantCodeOf(t, "the requester approving", err, codes.PermissionDenied)
	_, err = e.approvals(opsID).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: sum})
	wantCodeOf(t, "an admin who is no approver", err, codes.PermissionDenied)
	_, err = e.approvals(officerA).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: strings.Repeat("0", 64)})
	wantCodeOf(t, "an approval of another payload", err, codes.FailedPrecondition)
	_, err = e.approvals(officerA).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: "0123456789abcdef0123456789abcdef", PayloadSha256: sum})
	wantCodeOf(t, "an unknown request", err, codes.NotFound)
	_, err = e.approvals(officerA).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: "../" + id, PayloadSha256: sum})
	wantCodeOf(t, "an impossible ID", err, codes.InvalidArgument)

	a, err := e.approve(officerA, id)
	if err != nil || a.GetState() != "pending" || len(a.GetApprovals()) != 1 {
		t.Fatalf("first approval: %v %v", a, err)
	}
	_, err = e.approve(officerA, id)
	wantCodeOf(t, "approving twice", err, codes.AlreadyExists)
	_, err = e.result(requesterID, id)
	wantCodeOf(t, "the result before the quorum", err, codes.FailedPrecondition)
	_, err = e.result(officerA, id)
	wantCodeOf(t, "the result fetched by an approver", err, codes.PermissionDenied)

	a, err = e.approve(officerB, id)
	if err != nil || a.GetState() != "done" {
		t.Fatalf("the quorum's approval: %v %v", a, err)
	}
	_, err = e.approve(officerB, id)
	wantCodeOf(t, "approving a request that ran", err, codes.FailedPrecondition)

	res, err := e.result(requesterID, id)
	if err != nil {
		t.Fatal(err)
	}
	out := &sigilv1.SignTransactionResponse{}
	if err := res.GetResult().UnmarshalTo(out); err != nil {
		t.Fatal(err)
	}
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(out.GetRawTransaction()); err != nil {
		t.Fatal(err)
	}
	from, err := types.Sender(types.LatestSignerForChainID(tx.ChainId()), tx)
	if err != nil || from != common.HexToAddress(e.addr) || tx.Nonce() != 1 || tx.Value().String() != "2000000000000000000" {
		t.Fatalf("the approved transaction: from %v (%v), nonce %d, value %v", from, err, tx.Nonce(), tx.Value())
	}
	again, err := e.result(requesterID, id)
	if err != nil || string(again.GetResult().GetValue()) != string(res.GetResult().GetValue()) {
		t.Fatalf("the result fetched again differs: %v", err)
	}

	recs := auditRecords(t, e.AuditLog)
	var held, ran, approved int
	for _, r := range recs {
		if r.ApprovalID != id {
			continue
		}
		switch {
		case r.Outcome == "held":
			held++
		case r.Method == sigilv1.EthereumService_SignTransaction_FullMethodName && r.Outcome == "allowed":
			ran++
			if r.Identity != requesterID || len(r.ApprovedBy) != 2 || r.PayloadSHA256 == "" {
				t.Fatalf("the run's audit record: %+v", r)
			}
		case r.Method == sigilv1.ApprovalService_Approve_FullMethodName && r.Outcome == "allowed":
			approved++
		}
	}
	if held != 2 || ran != 1 || approved < 2 {
		t.Fatalf("audit: %d held, %d runs, %d approvals recorded", held, ran, approved)
	}
}

// A revocation an approval rule holds leaves the key untouched until the
// quorum; a denied one never runs, nor can it be approved after.
func TestRevocationWaitsForQuorumAndDenialNeverRuns(t *testing.T) {
	e := newDualEnv(t)
	ctx := context.Background()
	if _, err := e.keys(opsID).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "treasury-raw", Algorithm: "ES256", Purpose: "raw"}); err != nil {
		t.Fatal(err)
	}
	revoke := func() error {
		_, err := e.keys(opsID).RevokeGeneration(ctx, &sigilv1.RevokeGenerationRequest{Id: "treasury-raw", Generation: 1})
		return err
	}
	state := func() string {
		k, err := e.keys(opsID).GetKey(ctx, &sigilv1.GetKeyRequest{Id: "treasury-raw"})
		if err != nil {
			t.Fatal(err)
		}
		return k.GetKey().GetGenerations()[0].GetState()
	}
	before := state()
	denied := heldID(t, revoke())
	if _, err := e.approvals(officerA).Deny(ctx, &sigilv1.DenyRequest{ApprovalId: denied, Reason: "not during the freeze"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.approve(officerB, denied)
	wantCodeOf(t, "approving a denied request", err, codes.FailedPrecondition)
	_, err = e.result(opsID, denied)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not during the freeze") {
		t.Fatalf("the result of a denied request: %v", err)
	}

	id := heldID(t, revoke())
	if id == denied {
		t.Fatal("a new request took a denied one's ID")
	}
	if _, err := e.approve(officerA, id); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != before {
		t.Fatalf("one approval changed the key: %s -> %s", before, got)
	}
	if a, err := e.approve(officerB, id); err != nil || a.GetState() != "done" {
		t.Fatalf("the quorum: %v %v", a, err)
	}
	if got := state(); got == before {
		t.Fatalf("the approved revocation left the generation %s", got)
	}
	res, err := e.result(opsID, id)
	out := &sigilv1.RevokeGenerationResponse{}
	if err != nil || res.GetResult().UnmarshalTo(out) != nil || out.GetKey().GetId() != "treasury-raw" {
		t.Fatalf("result: %v %v", res, err)
	}
	if _, err := e.keys(opsID).DisableKey(ctx, &sigilv1.DisableKeyRequest{Id: "nope-1"}); status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.NotFound {
		t.Fatalf("disable of a key no rule holds: %v", err)
	}
}

// A request not approved before it expires never runs; the expiry is the
// rule's, on the server's clock.
func TestExpiredRequestNeverRuns(t *testing.T) {
	e := newDualEnv(t, strings.Replace(approvalPolicy, "expires: 1h", "expires: 30s", 1))
	_, err := e.signTx(0, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	if _, err := e.approve(officerA, id); err != nil {
		t.Fatal(err)
	}
	e.offset.Store(int64(31 * time.Second))
	_, err = e.approve(officerB, id)
	wantCodeOf(t, "approving an expired request", err, codes.FailedPrecondition)
	_, err = e.result(requesterID, id)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("the result of an expired request: %v", err)
	}
	list, err := e.approvals(officerA).ListApprovals(context.Background(), &sigilv1.ListApprovalsRequest{State: "expired"})
	if err != nil || len(list.GetApprovals()) != 1 || list.GetApprovals()[0].GetApprovalId() != id {
		t.Fatalf("listing expired requests: %v %v", list, err)
	}
}

// A policy change that tightens runs at once; one that loosens a limit
// (or drops a rule) is held.
func TestOnlyLooseningPolicyChangesAreHeld(t *testing.T) {
	e := newDualEnv(t)
	ctx := context.Background()
	update := func(p *sigilv1.EthPolicy) error {
		_, err := e.keys(opsID).UpdateKeyPolicy(ctx, &sigilv1.UpdateKeyPolicyRequest{Id: "treasury-1", EthPolicy: p})
		return err
	}
	if err := update(&sigilv1.EthPolicy{ChainIds: []uint64{1}, MaxValue: "4000000000000000000", MaxNonceGap: ptr(uint64(50))}); err != nil {
		t.Fatalf("tightening: %v", err)
	}
	for name, p := range map[string]*sigilv1.EthPolicy{
		"a higher limit":   {ChainIds: []uint64{1}, MaxValue: "4000000000000000001", MaxNonceGap: ptr(uint64(50))},
		"a limit dropped":  {ChainIds: []uint64{1}, MaxNonceGap: ptr(uint64(50))},
		"another chain":    {ChainIds: []uint64{1, 5}, MaxValue: "4000000000000000000", MaxNonceGap: ptr(uint64(50))},
		"a gap rule gone":  {ChainIds: []uint64{1}, MaxValue: "4000000000000000000"},
		"a recipient list": {ChainIds: []uint64{1}, MaxValue: "1", MaxNonceGap: ptr(uint64(50)), AllowTo: nil, AllowSelectors: nil, MaxFee: ""},
	} {
		err := update(p)
		if name == "a recipient list" { // a lower max value, nothing else: tighter
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		heldID(t, err)
	}
}

// With a rule on replacements, the first transaction of a nonce signs
// and a speed-up of it is held; an identical retry is no replacement.
func TestReplacementCanRequireApproval(t *testing.T) {
	e := newDualEnv(t)
	first, err := e.signTx(3, "0x1", "0x10")
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.signTx(3, "0x1", "0x10")
	if err != nil || again.GetHash() != first.GetHash() {
		t.Fatalf("an identical retry: %v %v", again, err)
	}
	_, err = e.signTx(3, "0x1", "0x20")
	id := heldID(t, err)
	show, err := e.approvals(officerA).GetApproval(context.Background(), &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil || !strings.Contains(fmt.Sprint(show.GetApproval().GetSummary()), "replaces") {
		t.Fatalf("the summary of a replacement: %v %v", show, err)
	}
	if a, err := e.approve(officerB, id); err != nil || a.GetState() != "done" {
		t.Fatalf("a quorum of one: %v %v", a, err)
	}
	res, err := e.result(requesterID, id)
	out := &sigilv1.SignTransactionResponse{}
	if err != nil || res.GetResult().UnmarshalTo(out) != nil || out.GetHash() == first.GetHash() {
		t.Fatalf("the speed-up: %v %v", res, err)
	}
}

// The requester and the approvers see a request; nobody else does, nor
// is it listed to them.
func TestHeldRequestsAreSeenOnlyByTheirParties(t *testing.T) {
	e := newDualEnv(t)
	ctx := context.Background()
	_, err := e.signTx(0, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	for who, want := range map[string]codes.Code{requesterID: codes.OK, officerA: codes.OK, opsID: codes.PermissionDenied, "spiffe://example.org/bystander": codes.PermissionDenied} {
		_, err := e.approvals(who).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
		wantCodeOf(t, "GetApproval as "+who, err, want)
		list, err := e.approvals(who).ListApprovals(ctx, &sigilv1.ListApprovalsRequest{})
		if err != nil || (len(list.GetApprovals()) == 1) != (want == codes.OK) {
			t.Fatalf("ListApprovals as %s: %v %v", who, list, err)
		}
	}
	_, err = e.approvals(opsID).Deny(ctx, &sigilv1.DenyRequest{ApprovalId: id})
	wantCodeOf(t, "a denial by a non-approver", err, codes.PermissionDenied)
	_, err = e.approvals(requesterID).Deny(ctx, &sigilv1.DenyRequest{ApprovalId: id})
	wantCodeOf(t, "a denial by the requester", err, codes.PermissionDenied)
	_, err = e.approvals(officerA).Deny(ctx, &sigilv1.DenyRequest{ApprovalId: id, Reason: "two\nlines"})
	wantCodeOf(t, "a reason of two lines", err, codes.InvalidArgument)
}

// A client can hold at most approval.PerRequester requests at once.
func TestHeldRequestsAreBoundedPerRequester(t *testing.T) {
	e := newDualEnv(t)
	var last error
	for n := range 17 {
		_, last = e.signTx(uint64(n), "0x1bc16d674ec80000", "0x10")
		if n < 16 {
			heldID(t, last)
		}
	}
	wantCodeOf(t, "the 17th held request", last, codes.ResourceExhausted)
}

// auditRecords reads the audit log's records.
func auditRecords(t *testing.T, path string) []audit.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r audit.Record
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Operation != "" {
			out = append(out, r)
		}
	}
	return out
}

// Hostile approvers: no certificate passes for an officer, the requester
// cannot approve its own request under a second identity, an approval
// is for one payload only. Afterwards the request is untouched and never
// ran, and the server is healthy.
func TestApprovalAttacks(t *testing.T) {
	e := newDualEnv(t)
	ctx := context.Background()
	_, err := e.signTx(0, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	show, err := e.approvals(officerA).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil {
		t.Fatal(err)
	}
	sum := show.GetApproval().GetPayloadSha256()
	cert := func(tmpl *x509.Certificate) *grpc.ClientConn {
		c := e.CA.Mint(t, tmpl)
		return e.DialAs(t, e.CA, &c)
	}
	u := func(s string) []*url.URL { v, _ := url.Parse(s); return []*url.URL{v} }
	approveAs := func(c *grpc.ClientConn, hash string) error {
		_, err := sigilv1.NewApprovalServiceClient(c).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: hash})
		return err
	}
	for _, row := range []struct {
		name string
		conn *grpc.ClientConn
		hash string
		want codes.Code
	}{
		{"CN is an officer's SPIFFE ID", cert(&x509.Certificate{Subject: pkix.Name{CommonName: officerA}}), sum, codes.PermissionDenied},
		{"a DNS SAN, with a CN spelling an officer", cert(&x509.Certificate{DNSNames: []string{"officer.example.org"}, Subject: pkix.Name{CommonName: officerA}}), sum, codes.PermissionDenied},
		{"an officer of another trust domain", cert(&x509.Certificate{URIs: u("spiffe://example.org.evil/officer/alice")}), sum, codes.PermissionDenied},
		{"an officer path that climbs out", cert(&x509.Certificate{URIs: u("spiffe://example.org/officer/../officer/eve")}), sum, codes.PermissionDenied},
		{"the requester with an officer's SAN beside its own", cert(&x509.Certificate{DNSNames: []string{"treasury.internal"}, URIs: u("spiffe://example.org/officer/treasury")}), sum, codes.PermissionDenied},
		{"an officer approving an empty hash", e.conns[officerA], "", codes.FailedPrecondition},
		{"an officer approving another payload's hash", e.conns[officerA], strings.Repeat("ab", 32), codes.FailedPrecondition},
		{"an officer approving a hash in upper case", e.conns[officerA], strings.ToUpper(sum), codes.FailedPrecondition},
	} {
		t.Run(row.name, func(t *testing.T) { wantCodeOf(t, row.name, approveAs(row.conn, row.hash), row.want) })
	}
	for who, call := range map[string]func(*grpc.ClientConn) error{
		"result": func(c *grpc.ClientConn) error {
			_, err := sigilv1.NewApprovalServiceClient(c).GetApprovalResult(ctx, &sigilv1.GetApprovalResultRequest{ApprovalId: id})
			return err
		},
		"deny": func(c *grpc.ClientConn) error {
			_, err := sigilv1.NewApprovalServiceClient(c).Deny(ctx, &sigilv1.DenyRequest{ApprovalId: id})
			return err
		},
	} {
		wantCodeOf(t, who+" by a CN spoofing the requester", call(cert(&x509.Certificate{Subject: pkix.Name{CommonName: "treasury.internal"}})), codes.PermissionDenied)
		wantCodeOf(t, who+" by a bystander", call(e.conns["spiffe://example.org/bystander"]), codes.PermissionDenied)
	}
	got, err := e.approvals(officerB).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil || got.GetApproval().GetState() != "pending" || len(got.GetApproval().GetApprovals()) != 0 {
		t.Fatalf("after the attacks: %v %v", got, err)
	}
	if runs := runsOf(t, e, id); len(runs) != 0 {
		t.Fatalf("the request ran: %+v", runs)
	}
}

// A quorum runs only with rights that still stand when it runs: an
// approval from an officer whose rule was withdrawn since does not count,
// and a requester the access rules no longer allow gets nothing signed.
func TestWithdrawnRightsStopAHeldRequest(t *testing.T) {
	e := newDualEnv(t)
	_, err := e.signTx(0, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	if _, err := e.approve(officerA, id); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(filepath.Dir(e.AuditLog), "policy.yaml")
	withdrawn := strings.Replace(approvalPolicy, "  - identity: spiffe://example.org/officer/*\n    keys: [\"treasury-*\"]\n    allow: [approvals.approve, keys.read]\n",
		"  - identity: spiffe://example.org/officer/bob\n    keys: [\"treasury-*\"]\n    allow: [approvals.approve, keys.read]\n", 1)
	if withdrawn == approvalPolicy {
		t.Fatal("the officers' rule is not where the test expects it")
	}
	os.WriteFile(file, []byte(withdrawn), 0o600)
	if err := e.Authz.Reload(); err != nil {
		t.Fatal(err)
	}
	a, err := e.approve(officerB, id)
	if err != nil || a.GetState() != "failed" || a.GetErrorCode() != "PermissionDenied" {
		t.Fatalf("a quorum with a withdrawn approver: %v %v", a, err)
	}
	_, err = e.result(requesterID, id)
	wantCodeOf(t, "its result", err, codes.PermissionDenied)
	for _, r := range auditRecords(t, e.AuditLog) {
		if r.ApprovalID == id && len(r.ApprovedBy) > 0 && (r.Outcome != "failed" || r.Generation != 0) {
			t.Fatalf("the request ran: %+v", r)
		}
	}
}

// flakyAnchors fails the store operations on names under a prefix, as a
// store that goes away would; with loseEnd set, it fails the write that
// records an approved request's end (a store blip, or a kill -9, right
// after the run), and with loseClaim the one that claims it to run.
type flakyAnchors struct {
	keyring.Anchors
	failing            atomic.Pointer[string]
	loseEnd, loseClaim atomic.Bool
}

func (f *flakyAnchors) fault(name string) error {
	if p := f.failing.Load(); p != nil && strings.HasPrefix(name, *p) {
		return errs.New(errs.Unavailable, "store unavailable")
	}
	return nil
}

func (f *flakyAnchors) CreateAnchor(ctx context.Context, name string, v []byte) error {
	if err := f.fault(name); err != nil {
		return err
	}
	return f.Anchors.CreateAnchor(ctx, name, v)
}

func (f *flakyAnchors) GetAnchor(ctx context.Context, name string) ([]byte, error) {
	if err := f.fault(name); err != nil {
		return nil, err
	}
	return f.Anchors.GetAnchor(ctx, name)
}

func (f *flakyAnchors) UpdateAnchor(ctx context.Context, name string, fn func([]byte) ([]byte, error)) error {
	if err := f.fault(name); err != nil {
		return err
	}
	return f.Anchors.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) {
		out, err := fn(old)
		state := func(s string) bool {
			return strings.HasPrefix(name, "approvals/") && bytes.Contains(out, []byte(`"state":"`+s+`"`))
		}
		if err == nil && (f.loseEnd.Load() && (state("done") || state("failed")) || f.loseClaim.Load() && state("running")) {
			return nil, errs.New(errs.Unavailable, "store unavailable")
		}
		return out, err
	})
}

// newFlakyEnv is a dual-control server over a flakyAnchors store, with
// claims of lease (the default if 0), no sweep (a test runs requests) and
// policy (approvalPolicy if none).
func newFlakyEnv(t *testing.T, lease time.Duration, policy ...string) (*dualEnv, *flakyAnchors) {
	flaky := &flakyAnchors{}
	e := newDualEnvWith(t, append(policy, approvalPolicy)[0], func(o *server.Options) {
		flaky.Anchors = o.Anchors
		o.Anchors, o.ApprovalLease, o.ApprovalSweep = flaky, lease, time.Hour
	})
	return e, flaky
}

func (f *flakyAnchors) fail(prefix string) { f.failing.Store(&prefix) }
func (f *flakyAnchors) heal()              { f.failing.Store(nil) }

// The store failing at each step of dual control: nothing is held half
// (a record without its payload is removed), no approval is lost or
// counted twice, and an approved request whose run could not read its
// payload runs once the store is back and the claim has lapsed.
func TestStoreFaultsNeverRunUnapproved(t *testing.T) {
	e, flaky := newFlakyEnv(t, 4*time.Second)
	ctx := context.Background()
	officer := e.approvals(officerA)

	flaky.fail("approval-payloads/")
	_, err := e.signTx(0, "0x1bc16d674ec80000", "0x10")
	wantCodeOf(t, "holding while the store fails", err, codes.Unavailable)
	flaky.heal()
	if list, err := officer.ListApprovals(ctx, &sigilv1.ListApprovalsRequest{}); err != nil || len(list.GetApprovals()) != 0 {
		t.Fatalf("a half-held request stayed: %v %v", list, err)
	}

	_, err = e.signTx(0, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	if _, err := e.approve(officerA, id); err != nil {
		t.Fatal(err)
	}
	flaky.fail("approvals/")
	_, err = e.approve(officerB, id)
	wantCodeOf(t, "approving while the store fails", err, codes.Unavailable)
	flaky.heal()
	if a, _ := officer.GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id}); a.GetApproval().GetState() != "pending" || len(a.GetApproval().GetApprovals()) != 1 {
		t.Fatalf("after a failed approval: %v", a)
	}

	show, err := e.approvals(officerB).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil {
		t.Fatal(err)
	}
	flaky.fail("approval-payloads/")
	if a, err := e.approvals(officerB).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: show.GetApproval().GetPayloadSha256()}); err != nil ||
		(a.GetApproval().GetState() != "approved" && a.GetApproval().GetState() != "running") {
		t.Fatalf("the quorum while the payload cannot be read: %v %v", a, err)
	}
	_, err = e.result(requesterID, id)
	wantCodeOf(t, "the result while it waits for its claim to lapse", err, codes.Unavailable)
	flaky.heal()
	e.offset.Store(int64(5 * time.Second))
	res, err := e.result(requesterID, id)
	out := &sigilv1.SignTransactionResponse{}
	if err != nil || res.GetResult().UnmarshalTo(out) != nil || len(out.GetRawTransaction()) == 0 {
		t.Fatalf("the result once the store is back: %v %v", res, err)
	}
	if n := len(runsOf(t, e, id)); n != 1 {
		t.Fatalf("%d runs", n)
	}
}

// runsOf are the audit records of held request id run.
func runsOf(t *testing.T, e *dualEnv, id string) []audit.Record {
	var out []audit.Record
	for _, r := range auditRecords(t, e.AuditLog) {
		if r.ApprovalID == id && len(r.ApprovedBy) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// Each sweep counts the kept requests by state on /metrics (an alert on
// requests left pending is in docs/failure-behaviour.md), and the
// exposition passes promlint.
func TestSweepCountsHeldRequests(t *testing.T) {
	e := newDualEnvWith(t, approvalPolicy, func(o *server.Options) { o.ApprovalSweep = 50 * time.Millisecond })
	_, err := e.signTx(0, "0x1bc16d674ec80000", "0x10")
	heldID(t, err)
	var body string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(e.AdminURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if body = string(b); strings.Contains(body, `sigil_approval_requests{state="pending"} 1`) {
			break
		}
	}
	for _, want := range []string{`sigil_approval_requests{state="pending"} 1`, `sigil_approval_requests{state="done"} 0`, `sigil_approval_steps_total{operation="eth.sign_tx",step="held"} 1`} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil || len(problems) > 0 {
		t.Fatalf("promlint: %v %v", problems, err)
	}
}

// An approved transaction whose run meets an HSM outage is not thrown
// away with the approvers' work: it is approved again, the requester's
// result says to retry, and it runs once the HSM is back (the nonce guard
// makes a second run of a transaction safe). Its Go client keeps waiting.
func TestApprovedTransactionOutlivesAnOutage(t *testing.T) {
	e := newDualEnv(t)
	_, err := e.signTx(0, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	if _, err := e.approve(officerA, id); err != nil {
		t.Fatal(err)
	}
	e.HSM.Down.Store(true)
	a, err := e.approve(officerB, id)
	if err != nil || a.GetState() != "approved" {
		t.Fatalf("the quorum's approval during an outage: %v %v, want the request approved again", a, err)
	}
	_, err = e.result(requesterID, id)
	wantCodeOf(t, "the result during the outage", err, codes.Unavailable)
	e.HSM.Down.Store(false)
	res, err := e.result(requesterID, id)
	if err != nil {
		t.Fatalf("the result once the HSM is back: %v", err)
	}
	out := &sigilv1.SignTransactionResponse{}
	if err := res.GetResult().UnmarshalTo(out); err != nil || len(out.GetRawTransaction()) == 0 {
		t.Fatalf("the approved transaction: %v", err)
	}
}
