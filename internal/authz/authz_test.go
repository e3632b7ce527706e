package authz

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/identity"
)

const policy = `
rules:
  - identity: spiffe://example.org/admin
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: dns:treasury.internal
    keys: ["treasury-*"]
    allow: [eth.sign_tx]
  - identity: cn:legacy-signer
    keys: ["raw-*"]
    allow: [sign.raw]
  - identity: spiffe://example.org/jwt/*
    keys: ["auth-*"]
    allow: [sign.jwt]
`

// Operations a purpose would register.
const (
	SignRaw   Op = "sign.raw"
	SignJWT   Op = "sign.jwt"
	EthSignTx Op = "eth.sign_tx"
)

func init() { RegisterOps(SignRaw, SignJWT, EthSignTx) }

func TestTypedIdentitiesNeverStandInForEachOther(t *testing.T) {
	p, err := Parse([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	uri := func(s string) identity.ID { return identity.ID{Kind: identity.URI, Name: s} }
	dns := func(s string) identity.ID { return identity.ID{Kind: identity.DNS, Name: s} }
	cn := func(s string) identity.ID { return identity.ID{Kind: identity.CN, Name: s} }
	for _, c := range []struct {
		ids     []identity.ID
		op      Op
		key     string
		matched string // "" when denied
	}{
		{[]identity.ID{uri("spiffe://example.org/admin"), cn("x")}, KeysAdmin, "k", "spiffe://example.org/admin"},
		{[]identity.ID{cn("spiffe://example.org/admin")}, KeysAdmin, "k", ""},
		{[]identity.ID{dns("spiffe://example.org/admin")}, KeysRead, "", ""},
		{[]identity.ID{dns("treasury.internal")}, EthSignTx, "treasury-1", "dns:treasury.internal"},
		{[]identity.ID{cn("treasury.internal"), uri("https://treasury.internal")}, EthSignTx, "treasury-1", ""},
		{[]identity.ID{dns("treasury.internal")}, EthSignTx, "other", ""},
		{[]identity.ID{cn("legacy-signer")}, SignRaw, "raw-1", "cn:legacy-signer"},
		{[]identity.ID{dns("legacy-signer")}, SignRaw, "raw-1", ""},
		{[]identity.ID{cn("x"), uri("spiffe://example.org/jwt/issuer-1")}, SignJWT, "auth-a", "spiffe://example.org/jwt/issuer-1"},
		{[]identity.ID{uri("spiffe://example.org/jwt")}, SignJWT, "auth-a", ""},
		{[]identity.ID{uri("spiffe://evil.org/jwt/issuer-1")}, SignJWT, "auth-a", ""},
		{nil, KeysRead, "", ""},
	} {
		who, ok := p.Allowed(c.ids, c.op, c.key)
		if ok != (c.matched != "") || (ok && who.String() != c.matched) {
			t.Errorf("%v %s on %q: allowed %v as %v, want %q", identity.Strings(c.ids), c.op, c.key, ok, who, c.matched)
		}
	}
}

func TestUntypedIdentitiesAreRefusedAtLoad(t *testing.T) {
	for _, bad := range []string{"treasury.internal", "ops", "spiffe://Example.org/x", "dns:*.example.org", "https://example.org/*"} {
		_, err := Parse([]byte("rules:\n  - identity: " + bad + "\n    keys: [\"*\"]\n    allow: [keys.read]\n"))
		if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "dns:NAME") || !strings.Contains(err.Error(), "cn:NAME") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestAllowAll(t *testing.T) {
	dev := identity.ID{Kind: identity.URI, Name: "spiffe://sigil.dev/dev-client"}
	p := AllowAll(dev.Name)
	for _, op := range Ops() {
		if who, ok := p.Allowed([]identity.ID{{Kind: identity.CN, Name: "dev-client"}, dev}, op, "any"); !ok || who != dev {
			t.Errorf("%s: %v %v", op, who, ok)
		}
	}
	if _, ok := p.Allowed([]identity.ID{{Kind: identity.CN, Name: dev.Name}}, KeysRead, ""); ok {
		t.Error("a CN spelled like the dev client's URI was allowed")
	}
}

func TestQuotaRulesAreChecked(t *testing.T) {
	rule := func(extra string) string {
		return "rules:\n  - identity: dns:a.example\n    keys: [\"*\"]\n    allow: [keys.read]\n" + extra
	}
	for name, doc := range map[string]string{
		"rate without a unit":  rule("    rate: \"5\"\n"),
		"rate per day":         rule("    rate: 5/d\n"),
		"zero rate":            rule("    rate: 0/s\n"),
		"negative burst":       rule("    rate: 5/s\n    burst: -1\n"),
		"burst without a rate": rule("    burst: 5\n"),
		"share over 1":         "quota_share: 2\n" + rule(""),
		"share of 0":           "quota_share: 0\n" + rule(""),
		"rate NaN":             rule("    rate: NaN/s\n"),
		"rate that underflows": rule("    rate: 1e-323/h\n"),
	} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p, err := Parse([]byte("quota_share: 0.5\n" + rule("    rate: 4/s\n")))
	if err != nil {
		t.Fatal(err)
	}
	who := []identity.ID{{Kind: identity.DNS, Name: "a.example"}}
	now := time.Unix(1_800_000_000, 0)
	allowed := 0
	for range 10 {
		if p.Decide(who, KeysRead, "k", now).OK {
			allowed++
		}
	}
	if allowed != 2 { // half of 4/s: a burst of 2
		t.Errorf("with quota_share 0.5 of 4/s, %d of 10 at once were allowed", allowed)
	}
	if d := p.Decide(who, KeysRead, "k", now.Add(time.Second)); !d.OK {
		t.Errorf("a second later: %+v", d)
	}
}

// Two rules with one identity pattern keep their own allowances.
func TestQuotasAreKeptPerRule(t *testing.T) {
	p, err := Parse([]byte(`rules:
  - identity: dns:a.example
    keys: ["hot-*"]
    allow: [keys.read]
    rate: 1/h
  - identity: dns:a.example
    keys: ["cold-*"]
    allow: [keys.read]
    rate: 1000/s
`))
	if err != nil {
		t.Fatal(err)
	}
	who := []identity.ID{{Kind: identity.DNS, Name: "a.example"}}
	now := time.Unix(1_800_000_000, 0)
	p.Decide(who, KeysRead, "cold-1", now)
	hot := 0
	for range 10 {
		if p.Decide(who, KeysRead, "hot-1", now).OK {
			hot++
		}
	}
	if hot != 1 {
		t.Errorf("a 1/h rule let %d of 10 through after another rule was used", hot)
	}
}

// DecideN lets through as many of n requests as the quota holds, the
// first ones, spending one each, and says when the others may try; n = 0
// (a batch whose items are decided by themselves) spends none; concurrent
// takers never share a token.
func TestDecideNChargesEachRequest(t *testing.T) {
	p, err := Parse([]byte("rules:\n  - identity: dns:a.example\n    keys: [\"*\"]\n    allow: [keys.read]\n    rate: 1/h\n    burst: 50\n"))
	if err != nil {
		t.Fatal(err)
	}
	who := []identity.ID{{Kind: identity.DNS, Name: "a.example"}}
	now := time.Unix(1_800_000_000, 0)
	if d := p.DecideN(who, KeysRead, "k", now, 0); !d.OK || d.Granted != 0 || d.RetryAfter != 0 {
		t.Errorf("none: %+v", d)
	}
	if d := p.DecideN(who, KeysRead, "k", now, 8); !d.OK || d.Granted != 8 || d.RetryAfter != 0 {
		t.Errorf("8 of 50: %+v", d)
	}
	var wg sync.WaitGroup
	var granted atomic.Int64
	for range 10 {
		wg.Go(func() { granted.Add(int64(p.DecideN(who, KeysRead, "k", now, 7).Granted)) })
	}
	wg.Wait()
	if granted.Load() != 42 {
		t.Errorf("ten takers of 7 from 42 left got %d", granted.Load())
	}
	if d := p.DecideN(who, KeysRead, "k", now, 3); d.OK || d.Granted != 0 || d.RetryAfter < 59*time.Minute {
		t.Errorf("3 of none left: %+v", d)
	}
	// A second past the hour: cancelled reservations give back their
	// tokens in floating point, a hair short of one at the hour itself.
	if d := p.DecideN(who, KeysRead, "k", now.Add(time.Hour+time.Second), 3); !d.OK || d.Granted != 1 || d.RetryAfter < 59*time.Minute {
		t.Errorf("3 of one left an hour on: %+v", d)
	}
	if d := p.DecideN(who, KeysRead, "other", now, 0); !d.OK {
		t.Errorf("none, the quota spent: %+v (a rule allows it)", d)
	}
	if d := p.DecideN([]identity.ID{{Kind: identity.DNS, Name: "b.example"}}, KeysRead, "k", now, 0); d.OK {
		t.Errorf("none, for an identity no rule names: %+v", d)
	}
}
