package authz

import (
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/identity"
)

func TestRulesReachTheirNamespacesOnly(t *testing.T) {
	p, err := Parse([]byte(`
rules:
  - identity: spiffe://example.org/root-only
    keys: ["*"]
    allow: [keys.read]
  - identity: spiffe://example.org/team
    keys: ["app-*"]
    namespaces: ["team-*"]
    allow: [keys.read, keys.admin]
  - identity: spiffe://example.org/prod
    keys: ["*"]
    namespaces: [payments-prod]
    allow: [keys.read]
approvals:
  - operation: keys.admin
    namespaces: [team-x]
    actions: [rotate]
    approvers: [spiffe://example.org/team]
    quorum: 1
`))
	if err != nil {
		t.Fatal(err)
	}
	id := func(s string) []identity.ID { v, _ := identity.Parse(s); return []identity.ID{v} }
	root, team, prod := id("spiffe://example.org/root-only"), id("spiffe://example.org/team"), id("spiffe://example.org/prod")
	for _, c := range []struct {
		who    []identity.ID
		target string
		want   bool
	}{
		{root, "k", true}, {root, "", true}, {root, "team-x/k", false}, {root, "team-x/", false},
		{team, "team-x/app-1", true}, {team, "team-y/", true}, {team, "team-x/other", false}, {team, "app-1", false}, {team, "payments-prod/app-1", false},
		{prod, "payments-prod/anything", true}, {prod, "payments-prod-2/anything", false}, {prod, "anything", false},
		{root, "sigil.audit", true}, {team, "sigil.audit", false},
	} {
		if _, got := p.Allowed(c.who, KeysRead, c.target); got != c.want {
			t.Errorf("%v on %q: %v, want %v", c.who, c.target, got, c.want)
		}
	}
	if _, ok := p.Covering(team, KeysAdmin, []string{"team-x/app-*"}); !ok {
		t.Error("a pattern within the rule, in its namespace, not covered")
	}
	if _, ok := p.Covering(team, KeysAdmin, []string{"other/app-*"}); ok {
		t.Error("a pattern in a namespace the rule does not reach, covered")
	}
	if r := p.Approval(KeysAdmin, "team-x/app-1", Facts{Actions: []string{"rotate"}}); r == nil {
		t.Error("the approval rule of team-x does not hold its rotation")
	}
	if r := p.Approval(KeysAdmin, "team-y/app-1", Facts{Actions: []string{"rotate"}}); r != nil {
		t.Error("the approval rule of team-x holds team-y's rotation")
	}
	if d := p.DecideAny(team, KeysRead, "team-q", time.Now()); !d.OK {
		t.Error("a self-authorized call in a namespace the rule reaches, refused")
	}
	if d := p.DecideAny(team, KeysRead, "root", time.Now()); d.OK {
		t.Error("a self-authorized call in root by a rule reaching only team-*, allowed")
	}
	// The namespace a protocol that cannot name one calls in.
	for _, c := range []struct {
		who  []identity.ID
		want string
		ok   bool
	}{{root, "root", true}, {prod, "payments-prod", true}, {team, "root", true}, {id("spiffe://example.org/nobody"), "root", true}} {
		if got, ok := p.Bound(c.who); got != c.want || ok != c.ok {
			t.Errorf("Bound(%v) = %q %v", c.who, got, ok)
		}
	}
}

func TestNamespacePatternsAreChecked(t *testing.T) {
	for _, bad := range []string{`"a/b"`, `"Team"`, `"[a"`, `""`} {
		doc := "rules:\n  - identity: spiffe://x/y\n    keys: [\"*\"]\n    namespaces: [" + bad + "]\n    allow: [keys.read]\n"
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("namespaces [%s] accepted", bad)
		}
	}
	two, err := Parse([]byte("rules:\n  - identity: spiffe://x/y\n    keys: [\"*\"]\n    namespaces: [a, b]\n    allow: [keys.read]\n"))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := identity.Parse("spiffe://x/y")
	if _, ok := two.Bound([]identity.ID{v}); ok {
		t.Error("an identity of two namespaces bound to one")
	}
}
