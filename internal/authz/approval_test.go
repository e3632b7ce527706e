package authz

import (
	"math/big"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/identity"
)

const approvalRules = policy + `
approvals:
  - operation: eth.sign_tx
    keys: ["treasury-*"]
    when: {value_gte: "10000000000000000000"}
    approvers: [spiffe://example.org/officer/*]
    quorum: 2
  - operation: eth.sign_tx
    keys: ["treasury-*"]
    when: {to_not_in: ["0x3535353535353535353535353535353535353535"]}
    approvers: [spiffe://example.org/officer/*]
    quorum: 1
    expires: 10m
  - operation: keys.admin
    actions: [revoke, loosen-policy]
    approvers: [spiffe://example.org/ops/*]
    quorum: 3
`

func init() { RegisterConditions(EthSignTx, CondValueGTE, CondToNotIn, CondReplacement) }

// The rule that holds a request is the strictest whose condition holds;
// conditions within one rule must all hold; a request no rule holds
// runs.
func TestApprovalRulesMatch(t *testing.T) {
	p, err := Parse([]byte(approvalRules))
	if err != nil {
		t.Fatal(err)
	}
	wei := func(s string) *big.Int { v, _ := new(big.Int).SetString(s, 10); return v }
	listed, other := "0x3535353535353535353535353535353535353535", "0x1111111111111111111111111111111111111111"
	for _, c := range []struct {
		name   string
		op     Op
		key    string
		f      Facts
		quorum int // 0: not held
	}{
		{"small, listed recipient", EthSignTx, "treasury-1", Facts{Value: wei("1"), To: listed}, 0},
		{"large, listed recipient", EthSignTx, "treasury-1", Facts{Value: wei("10000000000000000000"), To: listed}, 2},
		{"small, other recipient", EthSignTx, "treasury-1", Facts{Value: wei("1"), To: other}, 1},
		{"large, other recipient: the larger quorum", EthSignTx, "treasury-1", Facts{Value: wei("20000000000000000000"), To: other}, 2},
		{"contract creation", EthSignTx, "treasury-1", Facts{Value: wei("0")}, 1},
		{"another key", EthSignTx, "hot-1", Facts{Value: wei("20000000000000000000"), To: other}, 0},
		{"revoke", KeysAdmin, "any", Facts{Actions: []string{"revoke"}}, 3},
		{"tightening policy", KeysAdmin, "any", Facts{Actions: []string{"update-policy"}}, 0},
		{"loosening policy", KeysAdmin, "any", Facts{Actions: []string{"update-policy", "loosen-policy"}}, 3},
	} {
		r := p.Approval(c.op, c.key, c.f)
		if got := 0; r != nil {
			got = r.QuorumSize()
			if got != c.quorum {
				t.Errorf("%s: quorum %d, want %d", c.name, got, c.quorum)
			}
		} else if c.quorum != 0 {
			t.Errorf("%s: not held", c.name)
		}
	}
	if !p.MayHold(EthSignTx, "treasury-9") || p.MayHold(EthSignTx, "hot-1") || p.MayHold(SignRaw, "treasury-1") {
		t.Error("MayHold")
	}
	if !p.Tests(EthSignTx, "treasury-1", CondValueGTE) || !p.Tests(EthSignTx, "treasury-1", CondToNotIn) ||
		p.Tests(EthSignTx, "treasury-1", CondReplacement) || p.Tests(EthSignTx, "hot-1", CondValueGTE) {
		t.Error("Tests: which conditions the rules on a key set")
	}
	r := p.Approval(EthSignTx, "treasury-1", Facts{To: other})
	if r.Lifetime().Minutes() != 10 || !r.IsApprover(identity.ID{Kind: identity.URI, Name: "spiffe://example.org/officer/a"}) ||
		r.IsApprover(identity.ID{Kind: identity.CN, Name: "spiffe://example.org/officer/a"}) {
		t.Errorf("rule: %v %v", r.Lifetime(), r.ApproverPatterns())
	}
	if p.Approval(KeysAdmin, "k", Facts{Actions: []string{"revoke"}}).Lifetime() != DefaultExpires {
		t.Error("the default expiry")
	}
}

// A rule that could not be applied as written is refused at load, with
// its line.
func TestApprovalRulesAreChecked(t *testing.T) {
	rule := func(body string) string {
		return "rules: []\napprovals:\n  - operation: eth.sign_tx\n    approvers: [spiffe://example.org/o/*]\n" + body
	}
	for name, doc := range map[string]string{
		"no quorum":              rule(""),
		"quorum too large":       rule("    quorum: 17\n"),
		"untyped approver":       "approvals:\n  - operation: eth.sign_tx\n    approvers: [officer]\n    quorum: 1\n",
		"no approvers":           "approvals:\n  - operation: eth.sign_tx\n    quorum: 1\n",
		"unknown operation":      "approvals:\n  - operation: eth.burn\n    approvers: [dns:x]\n    quorum: 1\n",
		"actions on sign_tx":     rule("    quorum: 1\n    actions: [revoke]\n"),
		"unknown action":         "approvals:\n  - operation: keys.admin\n    actions: [rm-rf]\n    approvers: [dns:x]\n    quorum: 1\n",
		"require something else": "approvals:\n  - operation: keys.admin\n    approvers: [dns:x]\n    quorum: 1\n    require: password\n",
		"value on keys.admin":    "approvals:\n  - operation: keys.admin\n    when: {value_gte: \"1\"}\n    approvers: [dns:x]\n    quorum: 1\n",
		"bad value":              rule("    quorum: 1\n    when: {value_gte: \"-1\"}\n"),
		"bad address":            rule("    quorum: 1\n    when: {to_not_in: [\"0x12\"]}\n"),
		"expiry too long":        rule("    quorum: 1\n    expires: 200h\n"),
		"expiry too short":       rule("    quorum: 1\n    expires: 1ms\n"),
		"unknown field":          rule("    quorum: 1\n    quorom: 2\n"),
		"bad key pattern":        rule("    quorum: 1\n    keys: [\"[\"]\n"),
		"holding approvals":      "approvals:\n  - operation: approvals.approve\n    approvers: [dns:x]\n    quorum: 1\n",
		"holding reads":          "approvals:\n  - operation: keys.read\n    approvers: [dns:x]\n    quorum: 1\n",
	} {
		if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "line") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
