package authz

import (
	"strings"
	"testing"

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
