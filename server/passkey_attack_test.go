package server_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/console"
	"github.com/sigil-hsm/sigil/console/consoletest"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server"
)

const consoleOrigin, consoleRPID = "https://sigil.example.org:7444", "sigil.example.org"

// passkeyEnv is a dual-control server whose transfer rule requires
// passkeys, with a passkey enrolled for each officer.
func passkeyEnv(t *testing.T) (*dualEnv, map[string]*consoletest.Passkey, console.Store) {
	var anchors keyring.Anchors
	e := newDualEnvWith(t, strings.Replace(approvalPolicy, "    expires: 1h\n", "    expires: 1h\n    require: passkey\n", 1), func(o *server.Options) {
		o.ConsoleOrigin, o.ConsoleRPID, anchors = consoleOrigin, consoleRPID, o.Anchors
	})
	st := console.Store{A: anchors}
	keys := map[string]*consoletest.Passkey{}
	for _, who := range []string{officerA, officerB} {
		p := consoletest.New(t, who, consoleOrigin, consoleRPID)
		if err := st.AddPasskey(context.Background(), &console.Passkey{Identity: who, Credential: webauthn.Credential{ID: p.RawID(), PublicKey: p.COSE(t)}, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
		keys[who] = p
	}
	return e, keys, st
}

// A decision's assertion counts for the approval, decision and request
// it was made over, by the identity whose passkey made it, once: moved
// to another approval, turned into the other decision, made over other
// bytes, sent again, sent by another identity's certificate, or made by
// a passkey since revoked, it decides nothing. Every refusal is audited.
func TestPasskeyAssertionsCannotBeMovedOrReplayed(t *testing.T) {
	e, keys, st := passkeyEnv(t)
	ctx := context.Background()
	_, err := e.signTx(1, "0x1bc16d674ec80000", "0x10")
	first := heldID(t, err)
	_, err = e.signTx(2, "0x1bc16d674ec80000", "0x10")
	second := heldID(t, err)
	sha := func(id string) string {
		got, err := e.approvals(officerA).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
		if err != nil {
			t.Fatal(err)
		}
		return got.GetApproval().GetPayloadSha256()
	}
	approve := func(who, id, signedFor, decision, bytes string) error {
		ev := keys[who].Assert(t, console.Challenge(signedFor, decision, bytes))
		_, err := e.approvals(who).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: sha(id), Passkey: []byte(ev)})
		return err
	}
	for name, err := range map[string]error{
		"made for another approval": approve(officerA, first, second, "approve", sha(second)),
		"made to deny":              approve(officerA, first, first, "deny", sha(first)),
		"made over other bytes":     approve(officerA, first, first, "approve", strings.Repeat("0", 64)),
	} {
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("an assertion %s: %v", name, err)
		}
	}
	// Alice's genuine assertion, sent by Bob's certificate.
	ev := keys[officerA].Assert(t, console.Challenge(second, "approve", sha(second)))
	if _, err := e.approvals(officerB).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: second, PayloadSha256: sha(second), Passkey: []byte(ev)}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("alice's assertion under bob's certificate: %v", err)
	}
	// Alice's genuine assertion for the second request counts once.
	if _, err := e.approvals(officerA).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: second, PayloadSha256: sha(second), Passkey: []byte(ev)}); err != nil {
		t.Fatalf("alice's genuine assertion: %v", err)
	}
	if _, err := e.approvals(officerA).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: second, PayloadSha256: sha(second), Passkey: []byte(ev)}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("alice's assertion replayed: %v", err)
	}
	got, _ := e.approvals(officerA).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: second})
	if n := len(got.GetApproval().GetApprovals()); n != 1 || got.GetApproval().GetState() != "pending" {
		t.Fatalf("after a replay: %d approvals, %s", n, got.GetApproval().GetState())
	}
	// Bob's passkey revoked: his genuine assertion decides nothing.
	if err := st.Revoke(ctx, keys[officerB].ID); err != nil {
		t.Fatal(err)
	}
	if err := approve(officerB, second, second, "approve", sha(second)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a revoked passkey's assertion: %v", err)
	}
	if got, _ := e.approvals(officerA).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: second}); got.GetApproval().GetState() != "pending" {
		t.Errorf("the request after the refusals: %s", got.GetApproval().GetState())
	}
	refused := 0
	for _, r := range auditRecords(t, e.AuditLog) {
		if r.Operation == "approvals.approve" && r.Outcome != "allowed" {
			refused++
		}
	}
	if refused != 6 {
		t.Errorf("%d refused decisions audited, want 6", refused)
	}
}

// A certificate carrying two identities, an approver's and another's:
// a passkey enrolled for the other does not stand for the approver, whom
// the vote would be recorded as.
func TestPasskeyOfAnotherIdentityOnTheCertificateDoesNotCount(t *testing.T) {
	e, _, st := passkeyEnv(t)
	ctx := context.Background()
	const clerk = "spiffe://example.org/clerk/dave"
	p := consoletest.New(t, clerk, consoleOrigin, consoleRPID)
	if err := st.AddPasskey(ctx, &console.Passkey{Identity: clerk, Credential: webauthn.Credential{ID: p.RawID(), PublicKey: p.COSE(t)}, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	_, err := e.signTx(1, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	carol, _ := url.Parse("spiffe://example.org/officer/carol")
	dave, _ := url.Parse(clerk)
	cert := e.CA.Mint(t, &x509.Certificate{Subject: pkix.Name{CommonName: "two"}, URIs: []*url.URL{carol, dave}, NotAfter: time.Now().Add(time.Hour)})
	both := sigilv1.NewApprovalServiceClient(e.DialAs(t, e.CA, &cert))
	got, err := both.GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil {
		t.Fatal(err)
	}
	sha := got.GetApproval().GetPayloadSha256()
	ev := p.Assert(t, console.Challenge(id, "approve", sha))
	if _, err := both.Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: sha, Passkey: []byte(ev)}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the clerk's passkey approving as officer carol: %v", err)
	}
}
