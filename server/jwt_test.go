package server_test

import (
	"context"
	"encoding/json"
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
