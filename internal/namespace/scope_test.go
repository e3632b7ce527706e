package namespace

import (
	"testing"

	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

func TestScopeAndUnscopeEveryNamespacedField(t *testing.T) {
	req := &sigilv1.CreateKeyRequest{Id: "k1", Description: "tenant-a/not-a-name", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"issuer", "default"}}}
	if err := Scope(req, "tenant-a"); err != nil {
		t.Fatal(err)
	}
	want := &sigilv1.CreateKeyRequest{Id: "tenant-a/k1", Description: "tenant-a/not-a-name", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"tenant-a/issuer", "tenant-a/default"}}}
	if !proto.Equal(req, want) {
		t.Fatalf("scoped: %v", req)
	}
	resp := &sigilv1.GetKeyResponse{Key: &sigilv1.Key{Id: "tenant-a/k1", Owner: "tenant-a/x", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"tenant-a/issuer", "tenant-b/stray", "tenant-a/default"}}}}
	Unscope(resp, "tenant-a")
	wantResp := &sigilv1.GetKeyResponse{Key: &sigilv1.Key{Id: "k1", Owner: "tenant-a/x", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"issuer", "default"}}}}
	if !proto.Equal(resp, wantResp) {
		t.Fatalf("unscoped: %v", resp)
	}
	// Root is left as it is, and a name holding "/" is refused anywhere.
	rootReq := &sigilv1.SignRequest{KeyId: "k1"}
	if err := Scope(rootReq, Root); err != nil || rootReq.GetKeyId() != "k1" {
		t.Fatalf("root: %v %v", rootReq, err)
	}
	for _, ns := range []string{Root, "tenant-a"} {
		if err := Scope(&sigilv1.GetKeyRequest{Id: "tenant-b/k1"}, ns); err == nil {
			t.Errorf("a name naming another namespace, in %s: accepted", ns)
		}
		if err := Scope(&sigilv1.CreateJWKSetRequest{Name: "x", KeyPatterns: []string{"../*"}}, ns); err == nil {
			t.Errorf("a pattern climbing out, in %s: accepted", ns)
		}
	}
	// Sigil's own keys stay global.
	audit := &sigilv1.GetKeyRequest{Id: "sigil.audit"}
	if Scope(audit, "tenant-a"); audit.GetId() != "sigil.audit" {
		t.Errorf("sigil.audit scoped to %q", audit.GetId())
	}
}

func TestQualifyAndSplit(t *testing.T) {
	for _, c := range []struct{ ns, id, q string }{{Root, "k", "k"}, {"", "k", "k"}, {"a", "k", "a/k"}, {"a", "", "a/"}, {"a", "sigil.audit", "sigil.audit"}} {
		if got := Qualify(c.ns, c.id); got != c.q {
			t.Errorf("Qualify(%q, %q) = %q", c.ns, c.id, got)
		}
	}
	if ns, id := Split("a/k"); ns != "a" || id != "k" {
		t.Errorf("Split: %q %q", ns, id)
	}
	if ns, id := Split("k"); ns != Root || id != "k" {
		t.Errorf("Split root: %q %q", ns, id)
	}
	if _, ok := Unqualify("a", "b/k"); ok {
		t.Error("another namespace's name unqualified")
	}
}

func FuzzScope(f *testing.F) {
	f.Add("k1", "tenant-a", "issuer")
	f.Add("a/b", "root", "../x")
	f.Fuzz(func(t *testing.T, id, ns, set string) {
		req := &sigilv1.CreateKeyRequest{Id: id, JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{set}}}
		if Validate(ns) != nil {
			return
		}
		if err := Scope(req, ns); err != nil {
			return
		}
		// Whatever was accepted lies in ns (or is Sigil's own).
		for _, v := range []string{req.GetId(), req.GetJwtPolicy().GetJwksSets()[0]} {
			if v == "" {
				continue
			}
			if got := Of(v); got != ns && !(ns == Root || len(v) >= 6 && v[:6] == "sigil.") {
				t.Fatalf("%q scoped into %q in %q", v, got, ns)
			}
		}
	})
}

func TestUnscopeLeavesTheHandlersStateAlone(t *testing.T) {
	kept := []string{"tenant-a/issuer"} // as a key's policy in memory holds it
	resp := &sigilv1.Key{Id: "tenant-a/k1", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: kept}}
	Unscope(resp, "tenant-a")
	if kept[0] != "tenant-a/issuer" || resp.GetJwtPolicy().GetJwksSets()[0] != "issuer" {
		t.Fatalf("state %v, response %v", kept, resp.GetJwtPolicy().GetJwksSets())
	}
}
