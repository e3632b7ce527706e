package keyring_test

import (
	"context"
	"sync"
	"testing"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/signer"
)

// Two adoptions of one key pair racing under two IDs: exactly one makes
// a key; the other is refused, and a retry under the winner's ID finds
// the pair taken by that key.
func TestAdoptOnePairOnce(t *testing.T) {
	e := newEnv(t)
	kr := e.keyring(t, nil)
	ctx := context.Background()
	ref, err := e.hsm.NewRef("made-elsewhere", []byte("othr"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.hsm.CreateKey(ctx, signer.CreateKeyRequest{Name: "made-elsewhere", Ref: ref, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errsOf := make([]error, 2)
	for i, id := range []string{"adopt-a", "adopt-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errsOf[i] = kr.Adopt(ctx, keyring.CreateSpec{ID: id, Purpose: "raw"}, "pkcs11:object=made-elsewhere")
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errsOf {
		switch {
		case err == nil:
			won++
		case !errs.Is(err, errs.AlreadyExists):
			t.Fatalf("the losing adoption: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d adoptions of one pair succeeded: %v", won, errsOf)
	}
}
