package keyring_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
)

// wrappingKeys counts the wrapping key pairs of id in the token.
func (e *env) wrappingKeys(t *testing.T, id string) int {
	t.Helper()
	listed, err := e.hsm.ListKeys(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range listed {
		if k.Name == id+".import" {
			n++
		}
	}
	return n
}

func importSpec(t *testing.T, token string) keyring.ImportSpec {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 3072/8+40) // the right shape, wrapped to nothing
	rand.Read(junk)
	return keyring.ImportSpec{Token: token, Wrapped: junk, Public: &k.PublicKey}
}

// Import parameters last ImportTTL on the keyring's clock: presented
// after it, they are refused and their wrapping key destroyed; never
// presented, the sweep destroys them once expired; asked for again,
// the earlier ones are replaced.
func TestImportParamsExpire(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	ctx := context.Background()
	spec := keyring.CreateSpec{ID: "late", Purpose: raw.Name, Algorithm: signer.ES256}
	p, err := r.NewImportParams(ctx, "late", signer.ES256, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Expires.Equal(e.now.Add(keyring.ImportTTL)) || p.Public.N.BitLen() != 3072 || p.Token == "" {
		t.Fatalf("import parameters %+v", p)
	}
	if p2, err := r.NewImportParams(ctx, "late", signer.ES256, 0, ""); err != nil || p2.Token == p.Token || e.wrappingKeys(t, "late") != 1 {
		t.Fatalf("asking again: %v, %d wrapping keys", err, e.wrappingKeys(t, "late"))
	} else {
		p = p2
	}
	e.now = e.now.Add(keyring.ImportTTL)
	_, err = r.Import(ctx, spec, importSpec(t, p.Token))
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("import after ImportTTL: %v", err)
	}
	if n := e.wrappingKeys(t, "late"); n != 0 {
		t.Fatalf("%d wrapping keys left after the expired import", n)
	}

	if _, err := r.NewImportParams(ctx, "unused", signer.ES256, 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.Tick(ctx); err != nil || e.wrappingKeys(t, "unused") != 1 {
		t.Fatalf("a sweep before expiry: %v, %d wrapping keys", err, e.wrappingKeys(t, "unused"))
	}
	e.now = e.now.Add(keyring.ImportTTL + time.Hour)
	if err := r.Tick(ctx); err != nil || e.wrappingKeys(t, "unused") != 0 {
		t.Fatalf("a sweep after expiry: %v, %d wrapping keys", err, e.wrappingKeys(t, "unused"))
	}
	if _, err := r.Import(ctx, spec, importSpec(t, p.Token)); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("an import after the sweep: %v", err)
	}
}

// Two imports presenting one token: one reaches the backend, the other
// is refused before it; the parameters are spent either way.
func TestImportTokenServesOneImport(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	ctx := context.Background()
	p, err := r.NewImportParams(ctx, "once", signer.ES256, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([]error, 2)
	for i := range got {
		wg.Go(func() {
			_, got[i] = r.Import(ctx, keyring.CreateSpec{ID: "once", Purpose: raw.Name, Algorithm: signer.ES256}, importSpec(t, p.Token))
		})
	}
	wg.Wait()
	unwrapped := 0
	for _, err := range got {
		switch {
		case errs.Is(err, errs.InvalidArgument) && strings.Contains(err.Error(), "does not unwrap"):
			unwrapped++
		case errs.Is(err, errs.FailedPrecondition):
		default:
			t.Fatalf("an import: %v", err)
		}
	}
	if unwrapped != 1 || e.wrappingKeys(t, "once") != 0 {
		t.Fatalf("%d imports reached the backend (%v); %d wrapping keys left", unwrapped, got, e.wrappingKeys(t, "once"))
	}
	if _, err := r.Get(ctx, "once"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("the key after failed imports: %v", err)
	}
}
