//go:build cgo

package pkcs11

import (
	"context"
	"testing"

	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/signer"
)

// BenchmarkSignES256 is the baseline: the backend called in-process on a
// pooled, logged-in session with a cached handle.
func BenchmarkSignES256(b *testing.B) {
	be, err := Open(context.Background(), "bench", Config(softhsmtest.Token(b)))
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	info := mustCreate(b, be, "bench", signer.ES256, 0)
	in := randomInput(signer.ES256)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := be.Sign(context.Background(), info.Ref, signer.ES256, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
