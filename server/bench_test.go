package server_test

import (
	"context"
	"crypto/rand"
	"testing"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// BenchmarkSignES256 is Sign through gRPC on loopback; compare it with
// signer/pkcs11's BenchmarkSignES256 (the same call without Sigil).
func BenchmarkSignES256(b *testing.B) {
	h := newHarness(b)
	if _, err := h.Keys.CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: "bench", Algorithm: "ES256"}); err != nil {
		b.Fatal(err)
	}
	d := make([]byte, 32)
	rand.Read(d)
	req := &sigilv1.SignRequest{KeyId: "bench", Input: &sigilv1.SignRequest_Digest{Digest: d}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Sign.Sign(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
