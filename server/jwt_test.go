package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

func TestJWTServiceAndRotationCodes(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	jwtc := sigilv1.NewJWTServiceClient(h.Conn)
	h.create(t, "auth", "EdDSA", "jwt")
	h.create(t, "raw", "ES256", "raw")
	claims := []byte(`{"sub":"alice"}`)

	resp, err := jwtc.SignJWT(ctx, &sigilv1.SignJWTRequest{KeyId: "auth", ClaimsJson: claims, Ttl: durationpb.New(60e9)})
	if err != nil || resp.GetGeneration() != 1 || resp.GetToken() == "" || resp.GetExpireTime().AsTime().Sub(resp.GetIssueTime().AsTime()) != 60e9 {
		t.Fatalf("SignJWT: %v %v", resp, err)
	}
	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"unknown key", sign(jwtc, "nope", claims), codes.NotFound},
		{"raw key", sign(jwtc, "raw", claims), codes.FailedPrecondition},
		{"claims not an object", sign(jwtc, "auth", []byte(`[]`)), codes.InvalidArgument},
		{"claims not UTF-8 JSON", sign(jwtc, "auth", []byte{0xff, 0xfe}), codes.InvalidArgument},
		{"rotate a raw key (a new generation signs at once)", rotate(h, "raw"), codes.OK},
		{"rotate an unknown key", rotate(h, "nope"), codes.NotFound},
		{"bad policy", func() error {
			_, err := h.Keys.UpdateKeyPolicy(ctx, &sigilv1.UpdateKeyPolicyRequest{Id: "auth", JwtPolicy: &sigilv1.JWTPolicy{PublishAhead: durationpb.New(1e9), Skew: durationpb.New(2e9)}})
			return err
		}(), codes.InvalidArgument},
		{"policy on create of a raw key", func() error {
			_, err := h.Keys.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "raw2", Algorithm: "ES256", JwtPolicy: &sigilv1.JWTPolicy{Skew: durationpb.New(1e9)}})
			return err
		}(), codes.InvalidArgument},
		{"revoke generation 0", func() error {
			_, err := h.Keys.RevokeGeneration(ctx, &sigilv1.RevokeGenerationRequest{Id: "auth"})
			return err
		}(), codes.InvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantCode(t, c.err, c.want) })
	}

	// The JWKS is served, with the generation's kid, and follows a rotation.
	doc := func() map[string]any {
		r, err := http.Get(h.PublicURL + "/keys/auth/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		var d map[string]any
		json.Unmarshal(b, &d)
		return d
	}
	if keys := doc()["keys"].([]any); len(keys) != 1 || keys[0].(map[string]any)["kid"] != resp.GetKid() {
		t.Fatalf("JWKS %v", keys)
	}
	rot, err := h.Keys.RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: "auth"})
	if err != nil || len(rot.GetKey().GetGenerations()) != 2 || rot.GetKey().GetGenerations()[1].GetActivateTime() == nil {
		t.Fatalf("rotate: %v %v", rot, err)
	}
	if keys := doc()["keys"].([]any); len(keys) != 2 {
		t.Fatalf("the pending generation is not published: %v", keys)
	}
}

func sign(c sigilv1.JWTServiceClient, id string, claims []byte) error {
	_, err := c.SignJWT(context.Background(), &sigilv1.SignJWTRequest{KeyId: id, ClaimsJson: claims})
	return err
}

func rotate(h *harness, id string) error {
	_, err := h.Keys.RotateKey(context.Background(), &sigilv1.RotateKeyRequest{Id: id})
	return err
}

// kids fetches the JWK Set at path from the public listener and returns
// its kids, or nil with the status when it is not 200.
func kids(t *testing.T, h *harness, path string) ([]string, int) {
	t.Helper()
	r, err := http.Get(h.PublicURL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var d struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if r.StatusCode != 200 || json.NewDecoder(r.Body).Decode(&d) != nil {
		return nil, r.StatusCode
	}
	out := []string{}
	for _, k := range d.Keys {
		out = append(out, k.KID)
	}
	return out, 200
}

// Each issuer gets its own JWK Set; ES256K keys join only a set that
// opted in, so the default set stays acceptable to every library.
func TestJWKSetsPerIssuer(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	jwtc := sigilv1.NewJWTServiceClient(h.Conn)
	create := func(id, alg string, sets ...string) (*sigilv1.Key, error) {
		resp, err := h.Keys.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: id, Algorithm: alg, Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: sets}})
		return resp.GetKey(), err
	}
	newSet := func(name string, es256k bool, patterns ...string) error {
		_, err := jwtc.CreateJWKSet(ctx, &sigilv1.CreateJWKSetRequest{Name: name, AllowEs256K: es256k, KeyPatterns: patterns})
		return err
	}
	_, err := create("auth-a", "ES256", "issuer-a")
	wantCode(t, err, codes.FailedPrecondition) // no such set yet
	if err := newSet("issuer-a", false, "auth-*"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, newSet("issuer-a", true), codes.AlreadyExists)
	wantCode(t, newSet("default", true), codes.AlreadyExists)
	wantCode(t, newSet("../x", false), codes.InvalidArgument)
	wantCode(t, newSet("", false), codes.InvalidArgument)
	if err := newSet("chain", true, "k*"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, newSet("bad-glob", false, "[x"), codes.InvalidArgument)
	if err := newSet("issuer-z", false); err != nil { // admits issuer-z-* only
		t.Fatal(err)
	}

	a, err := create("auth-a", "ES256", "issuer-a")
	if err != nil || a.GetJwtPolicy().GetJwksSets()[0] != "issuer-a" {
		t.Fatalf("auth-a: %v %v", a, err)
	}
	d, err := create("auth-d", "EdDSA")
	if err != nil || d.GetJwtPolicy().GetJwksSets()[0] != "default" {
		t.Fatalf("auth-d: %v %v", d, err)
	}
	k, err := create("k1", "ES256K") // no set: its own document only
	if err != nil || len(k.GetJwtPolicy().GetJwksSets()) != 0 {
		t.Fatalf("k1: %v %v", k, err)
	}
	_, err = create("k2", "ES256K", "issuer-a")
	wantCode(t, err, codes.PermissionDenied) // not one of issuer-a's key IDs
	_, err = create("auth-z", "ES256", "issuer-z")
	wantCode(t, err, codes.PermissionDenied)
	_, err = create("k2", "ES256K", "default")
	wantCode(t, err, codes.FailedPrecondition)
	k2, err := create("k2", "ES256K", "chain")
	if err != nil {
		t.Fatal(err)
	}
	kid := func(k *sigilv1.Key) string { return k.GetGenerations()[0].GetKid() }
	for path, want := range map[string][]string{
		"/.well-known/jwks.json": {kid(d)}, "/jwks/default.json": {kid(d)}, "/jwks/issuer-a.json": {kid(a)},
		"/jwks/chain.json": {kid(k2)}, "/keys/k1/jwks.json": {kid(k)},
	} {
		if got, code := kids(t, h, path); code != 200 || len(got) != 1 || got[0] != want[0] {
			t.Errorf("%s: %v (%d), want %v", path, got, code, want)
		}
	}
	if _, code := kids(t, h, "/jwks/nope.json"); code != 404 {
		t.Errorf("unknown set: %d", code)
	}

	// A key moves between sets by its policy; a move to a set that does
	// not take it is refused and changes nothing.
	if _, err := h.Keys.UpdateKeyPolicy(ctx, &sigilv1.UpdateKeyPolicyRequest{Id: "auth-d", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"default", "issuer-a"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = h.Keys.UpdateKeyPolicy(ctx, &sigilv1.UpdateKeyPolicyRequest{Id: "k2", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"issuer-a"}}})
	wantCode(t, err, codes.PermissionDenied)
	if got, _ := kids(t, h, "/jwks/issuer-a.json"); len(got) != 2 {
		t.Errorf("issuer-a after auth-d joined: %v", got)
	}
	list, err := jwtc.ListJWKSets(ctx, &sigilv1.ListJWKSetsRequest{})
	if err != nil || len(list.GetSets()) != 4 || list.GetSets()[0].GetName() != "default" {
		t.Fatalf("ListJWKSets: %v %v", list, err)
	}
	for _, s := range list.GetSets() {
		want := map[string]string{"default": "[auth-d]", "issuer-a": "[auth-a auth-d]", "chain": "[k2]", "issuer-z": "[]"}[s.GetName()]
		if got := fmt.Sprint(s.GetKeyIds()); got != want || s.GetPath() != "/jwks/"+s.GetName()+".json" {
			t.Errorf("set %s: keys %s, path %s", s.GetName(), got, s.GetPath())
		}
	}
}
