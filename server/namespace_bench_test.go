package server_test

import (
	"context"
	"testing"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// BenchmarkSign measures Sign on the mTLS server with a policy and an
// audit log, in root and in a namespace, for a profile of what a
// namespace costs (make bench reports the ratio).
func BenchmarkSign(b *testing.B) {
	e := newNSEnv(b)
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{{"root", context.Background()}, {"namespace", in("tenant-a")}} {
		keys := sigilv1.NewKeyServiceClient(e.root)
		if _, err := keys.CreateKey(c.ctx, &sigilv1.CreateKeyRequest{Id: "bench", Algorithm: "ES256"}); err != nil {
			b.Fatal(err)
		}
		sign := sigilv1.NewSigningServiceClient(e.root)
		req := &sigilv1.SignRequest{KeyId: "bench", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}}
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := sign.Sign(c.ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
