package authz

import (
	"testing"

	"github.com/sigil-hsm/sigil/internal/identity"
)

// What a scoped admin's rule covers, for keyless admin calls that admit
// keys by pattern (JWK Sets): only patterns inside its own.
func TestCoveringPatterns(t *testing.T) {
	r := Rule{Keys: []string{"tenant-a-*", "shared-key"}}
	for q, want := range map[string]bool{
		"tenant-a-*":     true,
		"tenant-a-web-*": true,
		"tenant-a-?":     true,
		"tenant-a-web":   true,
		"shared-key":     true,
		"tenant-*":       false,
		"*":              false,
		"tenant-b-*":     false,
		"tenant-b-web":   false,
		"shared-*":       false,
		"?enant-a-x":     false,
		"[t]enant-a-*":   false,
		"tenant-a":       false,
	} {
		if got := r.containsPattern(q); got != want {
			t.Errorf("rule %v contains %q: %v, want %v", r.Keys, q, got, want)
		}
	}
	if !(&Rule{Keys: []string{"*"}}).containsPattern("[x]*") {
		t.Error("a rule for every key does not contain every pattern")
	}
	p := &Policy{rules: []Rule{
		{Identity: "spiffe://t/a", Keys: []string{"tenant-a-*"}, Allow: []Op{"jwks.admin"}, who: identity.MustParsePattern("spiffe://t/a")},
		{Identity: "spiffe://t/a", Keys: []string{"*"}, Allow: []Op{"keys.read"}, who: identity.MustParsePattern("spiffe://t/a")},
	}}
	id, err := identity.Parse("spiffe://t/a")
	if err != nil {
		t.Fatal(err)
	}
	a := []identity.ID{id}
	if _, ok := p.Covering(a, "jwks.admin", []string{"tenant-a-web", "tenant-a-web-*"}); !ok {
		t.Error("a tenant's admin cannot make a set of its own keys")
	}
	if _, ok := p.Covering(a, "jwks.admin", []string{"tenant-b", "tenant-a-*"}); ok {
		t.Error("a tenant's admin named a set after another tenant")
	}
	if _, ok := p.Covering(a, "jwks.admin", []string{"tenant-a-x", "*"}); ok {
		t.Error("a keys.read rule for every key lent its breadth to jwks.admin")
	}
}
