package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/console"
	"github.com/sigil-hsm/sigil/console/consoletest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// approvals show checks each vote's passkey assertion itself: genuine
// over this approval and payload, it says verified; shown with another
// payload hash, another approval, or a key that did not make it, it
// says NOT VERIFIED.
func TestApprovalsShowChecksPasskeyVotes(t *testing.T) {
	const origin, rpID, sha = "https://sigil.example.org", "sigil.example.org", "ab12"
	alice, mallory := consoletest.New(t, "alice", origin, rpID), consoletest.New(t, "mallory", origin, rpID)
	vote := func(signer *consoletest.Passkey, enrolled *consoletest.Passkey, approvalID string) *sigilv1.ApprovalVote {
		return &sigilv1.ApprovalVote{Identity: "spiffe://example.org/alice", PasskeyAssertion: []byte(signer.Assert(t, console.Challenge(approvalID, "approve", sha))),
			PasskeyOrigin: origin, PasskeyPublicKey: enrolled.COSE(t)}
	}
	for name, c := range map[string]struct {
		approval *sigilv1.Approval
		want     string
	}{
		"genuine":              {&sigilv1.Approval{ApprovalId: "a1", PayloadSha256: sha, Approvals: []*sigilv1.ApprovalVote{vote(alice, alice, "a1")}}, "verified here"},
		"another payload":      {&sigilv1.Approval{ApprovalId: "a1", PayloadSha256: "cd34", Approvals: []*sigilv1.ApprovalVote{vote(alice, alice, "a1")}}, "NOT VERIFIED"},
		"another approval":     {&sigilv1.Approval{ApprovalId: "a2", PayloadSha256: sha, Approvals: []*sigilv1.ApprovalVote{vote(alice, alice, "a1")}}, "NOT VERIFIED"},
		"not the enrolled key": {&sigilv1.Approval{ApprovalId: "a1", PayloadSha256: sha, Approvals: []*sigilv1.ApprovalVote{vote(mallory, alice, "a1")}}, "NOT VERIFIED"},
	} {
		var out bytes.Buffer
		if err := printPasskeys(&out, &sigilv1.GetApprovalResponse{Approval: c.approval, ConsoleRpId: rpID}); err != nil || !strings.Contains(out.String(), c.want) {
			t.Errorf("%s: %v %q", name, err, out.String())
		}
	}
}
