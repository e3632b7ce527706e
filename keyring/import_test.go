package keyring_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/wraptest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
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

// wrappedKey is k (a fresh P-256 key if nil) wrapped to p.
func wrappedKey(t *testing.T, p keyring.ImportParams, k *ecdsa.PrivateKey) keyring.ImportSpec {
	t.Helper()
	if k == nil {
		k, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return keyring.ImportSpec{Token: p.Token, Wrapped: wraptest.Wrap(t, p.Public, p.Wrapping.OAEPHash, k), Public: &k.PublicKey}
}

// gatedHSM is the PKCS#11 backend with ImportKey and NewWrappingKey able to
// wait at their start: the scheduling a slow HSM gives.
type gatedHSM struct {
	*pkcs11.Backend
	importIn, importGo chan struct{}
	wrapIn, wrapGo     chan struct{}
}

func (g *gatedHSM) ImportKey(ctx context.Context, req signer.CreateKeyRequest, imp signer.Import) (signer.KeyInfo, error) {
	if g.importIn != nil {
		g.importIn <- struct{}{}
		<-g.importGo
	}
	return g.Backend.ImportKey(ctx, req, imp)
}

func (g *gatedHSM) NewWrappingKey(ctx context.Context, ref string) (*rsa.PublicKey, signer.Wrapping, error) {
	if g.wrapIn != nil {
		g.wrapIn <- struct{}{}
		<-g.wrapGo
	}
	return g.Backend.NewWrappingKey(ctx, ref)
}

func (e *env) gatedHSMKeyring(t *testing.T, g *gatedHSM) *keyring.Keyring {
	r, err := keyring.New(context.Background(), keyring.Options{
		Store: e.store, Backends: map[string]signer.Backend{"hsm-a": g}, DefaultBackend: "hsm-a",
		Now: func() time.Time { return e.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// An import's cleanup destroys the parameters it took, not those asked
// for again while it ran: the later token still imports, and no wrapping
// key is left once everything expired (found by a hostile review).
func TestImportCleanupSparesNewerParams(t *testing.T) {
	e := newEnv(t)
	g := &gatedHSM{Backend: e.hsm, importIn: make(chan struct{}), importGo: make(chan struct{})}
	r := e.gatedHSMKeyring(t, g)
	ctx := context.Background()
	spec := keyring.CreateSpec{ID: "k", Purpose: raw.Name, Algorithm: signer.ES256}
	p1, err := r.NewImportParams(ctx, "k", signer.ES256, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.Import(ctx, spec, wrappedKey(t, p1, nil)); done <- err }()
	<-g.importIn // token 1 taken, the unwrap about to start
	g.importIn = nil
	g.wrapIn, g.wrapGo = make(chan struct{}), make(chan struct{})
	got := make(chan keyring.ImportParams, 1)
	go func() {
		p, err := r.NewImportParams(ctx, "k", signer.ES256, 0, "") // the operator asks again
		if err != nil {
			t.Errorf("import-params again: %v", err)
		}
		got <- p
	}()
	<-g.wrapIn // parameters 2 recorded, their wrapping key not yet made
	g.wrapIn = nil
	close(g.importGo)
	<-done // the first import ends (its wrapping key was replaced under it)
	close(g.wrapGo)
	p2 := <-got
	if _, err := r.Import(ctx, spec, wrappedKey(t, p2, nil)); err != nil {
		t.Fatalf("an import with the parameters asked for second: %v", err)
	}
	e.now = e.now.Add(keyring.ImportTTL + time.Hour)
	if err := r.Tick(ctx); err != nil || e.wrappingKeys(t, "k") != 0 {
		t.Fatalf("after the sweep: %v, %d wrapping keys", err, e.wrappingKeys(t, "k"))
	}
}

// One key pair, one key: the same private key imported under a second ID
// is refused (two ledgers for one address could sign one nonce twice),
// and the refusal spends nothing of the second ID's parameters.
func TestOneKeyPairImportsOnce(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	ctx := context.Background()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for i, id := range []string{"twin-a", "twin-b"} {
		p, err := r.NewImportParams(ctx, id, signer.ES256, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Import(ctx, keyring.CreateSpec{ID: id, Purpose: raw.Name, Algorithm: signer.ES256}, wrappedKey(t, p, k))
		switch {
		case i == 0 && err != nil:
			t.Fatalf("the first import: %v", err)
		case i == 1 && !errs.Is(err, errs.AlreadyExists):
			t.Fatalf("the same key under a second ID: %v", err)
		case i == 1 && e.wrappingKeys(t, id) != 1:
			t.Fatalf("the refused import spent its parameters")
		}
	}
}

// A namespace's keys import like root's, and the parameters outstanding
// in one namespace are bounded.
func TestNamespacedImportParams(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	ctx := context.Background()
	for i := range keyring.MaxImportParams {
		if _, err := r.NewImportParams(ctx, fmt.Sprintf("tenant/k%d", i), signer.ES256, 0, ""); err != nil {
			t.Fatalf("parameters %d in a namespace: %v", i, err)
		}
	}
	if _, err := r.NewImportParams(ctx, "tenant/one-more", signer.ES256, 0, ""); !errs.Is(err, errs.ResourceExhausted) {
		t.Fatalf("parameters past the namespace's bound: %v", err)
	}
	if _, err := r.NewImportParams(ctx, "tenant/k0", signer.ES256, 0, ""); err != nil {
		t.Fatalf("asking again for outstanding parameters: %v", err)
	}
	if _, err := r.NewImportParams(ctx, "other/k", signer.ES256, 0, ""); err != nil {
		t.Fatalf("another namespace: %v", err)
	}
	if _, err := r.NewImportParams(ctx, "tenant/sigil.audit", signer.ES256, 0, ""); !errs.Is(err, errs.InvalidArgument) {
		t.Fatalf("a reserved name in a namespace: %v", err)
	}
}
