package console

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/console/consoletest"
	"github.com/sigil-hsm/sigil/internal/audit"
)

// From the audit records alone: a decision's assertion verifies against
// its passkey's registration record; one moved to another approval or
// decision, by another identity, whose registration is missing, or
// signed by another passkey, does not.
func TestAuditCheckFromTheRecordsAlone(t *testing.T) {
	rp := Relying{Origin: "https://sigil.example.org:7444", RPID: "sigil.example.org"}
	alice, mallory := consoletest.New(t, t.Name(), rp.Origin, rp.RPID), consoletest.New(t, t.Name(), rp.Origin, rp.RPID)
	mallory.ID = alice.ID // a key that is not the registered one, under its ID
	reg := audit.Record{Time: time.Now(), Operation: OpRegister, Outcome: "allowed", Identities: []string{"spiffe://example.org/officer/alice"},
		Details: map[string]string{DetailCredential: alice.ID, DetailPublicKey: base64.RawURLEncoding.EncodeToString(alice.COSE(t)), DetailOrigin: rp.Origin, DetailRPID: rp.RPID}}
	decision := func(who *consoletest.Passkey, identity, approvalID, decision, signedFor string) audit.Record {
		return audit.Record{Time: time.Now(), Operation: "approvals.approve", Outcome: "allowed", Identity: identity, ApprovalID: approvalID,
			Details: map[string]string{DetailAssertion: who.Assert(t, Challenge(signedFor, decision, "ab12")), DetailDecision: decision, DetailPayload: "ab12"}}
	}
	good := decision(alice, "spiffe://example.org/officer/alice", "ap-1", "approve", "ap-1")
	if n, problems := AuditCheck([]audit.Record{reg, good}); n != 1 || len(problems) != 0 {
		t.Fatalf("a good decision: %d verified, %v", n, problems)
	}
	moved := good
	moved.ApprovalID = "ap-2"
	denied := good
	denied.Details = map[string]string{DetailAssertion: good.Details[DetailAssertion], DetailDecision: "deny", DetailPayload: "ab12"}
	for name, c := range map[string]struct {
		recs []audit.Record
		want string
	}{
		"moved to another approval":   {[]audit.Record{reg, moved}, "challenge"},
		"turned into a denial":        {[]audit.Record{reg, denied}, "challenge"},
		"by another identity":         {[]audit.Record{reg, decision(alice, "spiffe://example.org/mallory", "ap-1", "approve", "ap-1")}, "registered for"},
		"no registration":             {[]audit.Record{good}, "no registration"},
		"another key under the ID":    {[]audit.Record{reg, decision(mallory, "spiffe://example.org/officer/alice", "ap-1", "approve", "ap-1")}, "signature"},
		"on another console's origin": {[]audit.Record{reg, decision(&consoletest.Passkey{ID: alice.ID, Key: alice.Key, Origin: "https://evil.example", RPID: rp.RPID, Counter: 1}, "spiffe://example.org/officer/alice", "ap-1", "approve", "ap-1")}, "origin"},
	} {
		n, problems := AuditCheck(c.recs)
		if n != 0 || len(problems) != 1 || !strings.Contains(problems[0], c.want) {
			t.Errorf("%s: %d verified, %v (want a problem saying %q)", name, n, problems, c.want)
		}
	}
}

// Genuine decisions verify offline though the record's own identity list
// cuts a long identity, and though the console moved to another origin
// after the registration (the decision names the origin the server
// checked; the passkey is bound to the RP ID) — found by a review.
func TestAuditCheckLongIdentityAndMovedConsole(t *testing.T) {
	rp := Relying{Origin: "https://sigil.example.org:7444", RPID: "sigil.example.org"}
	long := "spiffe://example.org/officer/" + strings.Repeat("a", 140)
	p := consoletest.New(t, t.Name(), rp.Origin, rp.RPID)
	reg := audit.Record{Time: time.Now(), Operation: OpRegister, Outcome: "allowed", Identities: []string{long[:128] + "…"},
		Details: map[string]string{DetailIdentity: long, DetailCredential: p.ID, DetailPublicKey: base64.RawURLEncoding.EncodeToString(p.COSE(t)), DetailOrigin: rp.Origin, DetailRPID: rp.RPID}}
	moved := &consoletest.Passkey{ID: p.ID, Key: p.Key, Origin: "https://sigil.example.org", RPID: rp.RPID, Counter: 1}
	dec := audit.Record{Time: time.Now(), Operation: "approvals.approve", Outcome: "allowed", Identity: long, ApprovalID: "ap-1",
		Details: map[string]string{DetailAssertion: moved.Assert(t, Challenge("ap-1", "approve", "ab12")), DetailDecision: "approve", DetailPayload: "ab12", DetailOrigin: moved.Origin}}
	if n, problems := AuditCheck([]audit.Record{reg, dec}); n != 1 || len(problems) != 0 {
		t.Fatalf("%d verified, %v", n, problems)
	}
}
