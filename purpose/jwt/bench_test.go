package jwt_test

import (
	"context"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/purpose/jwt"
)

// BenchmarkPrepareAndSign is minting one ES256 token, HSM call included;
// compare with signer/pkcs11's BenchmarkSignES256 for what JWT adds.
func BenchmarkPrepareAndSign(b *testing.B) {
	kr, _ := newKeyring(b)
	ctx := context.Background()
	claims := []byte(`{"sub":"user-1234","aud":"api.example","scope":"read write","tenant":"t-42"}`)
	for b.Loop() {
		s, err := kr.ForSigning(ctx, "jwt-es256", jwt.Name)
		if err != nil {
			b.Fatal(err)
		}
		p, err := jwt.Prepare(jwt.Request{Claims: claims}, jwt.PolicyOf(s.Key), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := jwt.Sign(ctx, s, p); err != nil {
			b.Fatal(err)
		}
	}
}
