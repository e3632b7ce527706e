//go:build cgo

package pkcs11

import (
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/secret"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/signer"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 40) }

func openTest(t *testing.T) *Backend {
	t.Helper()
	b, err := Open(context.Background(), "hsm-test", Config(softhsmtest.Token(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func randomInput(alg signer.Algorithm) []byte {
	msg := make([]byte, 100)
	rand.Read(msg)
	return alg.Input(msg)
}

func mustCreate(t testing.TB, b *Backend, name string, alg signer.Algorithm, bits int) signer.KeyInfo {
	t.Helper()
	info, err := b.CreateKey(context.Background(), signer.CreateKeyRequest{Name: name, Algorithm: alg, RSABits: bits})
	if err != nil {
		t.Fatalf("CreateKey(%s %s): %v", name, alg, err)
	}
	return info
}

func wantKind(t *testing.T, err error, k errs.Kind) {
	t.Helper()
	if !errs.Is(err, k) {
		t.Fatalf("got %v (kind %v), want kind %v", err, errs.KindOf(err), k)
	}
}

// rawSession opens a session of the test's own on b's token, as an
// attacker with the PIN and a PKCS#11 library would.
func rawSession(t *testing.T, b *Backend) (*p11.Ctx, p11.SessionHandle) {
	t.Helper()
	ctx := b.mod.(*p11.Ctx)
	slot, err := b.findSlot()
	if err != nil {
		t.Fatal(err)
	}
	h, err := ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctx.CloseSession(h) })
	if err := ctx.Login(h, p11.CKU_USER, b.pin); err != nil && !isCKR(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		t.Fatal(err)
	}
	return ctx, h
}

func TestPrivateKeysCannotLeaveTheToken(t *testing.T) {
	b := openTest(t)
	for _, alg := range signer.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			info := mustCreate(t, b, "nx-"+string(alg), alg, 2048)
			ctx, h := rawSession(t, b)
			u, _ := ParseURI(info.Ref)
			priv, err := b.findOne(h, p11.CKO_PRIVATE_KEY, u)
			if err != nil {
				t.Fatal(err)
			}
			secretAttr := p11.CKA_VALUE
			if alg.IsRSA() {
				secretAttr = p11.CKA_PRIVATE_EXPONENT
			}
			_, err = ctx.GetAttributeValue(h, priv, []*p11.Attribute{p11.NewAttribute(uint(secretAttr), nil)})
			if !isCKR(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
				t.Errorf("reading the private value: got %v, want CKR_ATTRIBUTE_SENSITIVE", err)
			}
			err = ctx.SetAttributeValue(h, priv, []*p11.Attribute{p11.NewAttribute(p11.CKA_EXTRACTABLE, true)})
			if !isCKR(err, p11.CKR_ATTRIBUTE_READ_ONLY) {
				t.Errorf("setting CKA_EXTRACTABLE back to true: got %v, want CKR_ATTRIBUTE_READ_ONLY", err)
			}
			wrapKey, err := ctx.GenerateKey(h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, []*p11.Attribute{
				p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_VALUE_LEN, 32), p11.NewAttribute(p11.CKA_WRAP, true)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ctx.WrapKey(h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wrapKey, priv); !isCKR(err, p11.CKR_KEY_UNEXTRACTABLE) {
				t.Errorf("C_WrapKey of the private key: got %v, want CKR_KEY_UNEXTRACTABLE", err)
			}
			want := map[uint]bool{p11.CKA_SENSITIVE: true, p11.CKA_NEVER_EXTRACTABLE: true, p11.CKA_EXTRACTABLE: false,
				p11.CKA_SIGN: true, p11.CKA_DECRYPT: false, p11.CKA_UNWRAP: false, p11.CKA_DERIVE: false, p11.CKA_TOKEN: true, p11.CKA_PRIVATE: true}
			for attr, v := range want {
				got, err := ctx.GetAttributeValue(h, priv, []*p11.Attribute{p11.NewAttribute(attr, nil)})
				if err != nil {
					t.Fatal(err)
				}
				if (got[0].Value[0] != 0) != v {
					t.Errorf("attribute 0x%x = %v, want %v", attr, got[0].Value, v)
				}
			}
		})
	}
}

func TestCreateRefusesAnExistingLabelAndBadRequests(t *testing.T) {
	b := openTest(t)
	ctx := context.Background()
	mustCreate(t, b, "dup", signer.ES256, 0)
	_, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "dup", Algorithm: signer.ES256})
	wantKind(t, err, errs.AlreadyExists)
	_, err = b.CreateKey(ctx, signer.CreateKeyRequest{Name: "rsa", Algorithm: signer.RS256, RSABits: 1024})
	wantKind(t, err, errs.InvalidArgument)
	_, err = b.CreateKey(ctx, signer.CreateKeyRequest{Name: "x", Algorithm: "HS256"})
	wantKind(t, err, errs.InvalidArgument)
}

func TestTwoObjectsForOneReferenceIsAnError(t *testing.T) {
	b := openTest(t)
	info := mustCreate(t, b, "twin", signer.ES256, 0)
	u, _ := ParseURI(info.Ref)
	// A second pair under the same label and id, made behind Sigil's back.
	ctx, h := rawSession(t, b)
	g, _ := keyGenFor(signer.CreateKeyRequest{Algorithm: signer.ES256})
	pub, priv := g.templates(u.Object, u.ID)
	if _, _, err := ctx.GenerateKeyPair(h, []*p11.Mechanism{p11.NewMechanism(g.mech, nil)}, pub, priv); err != nil {
		t.Fatal(err)
	}
	b.cache.Clear()
	_, err := b.Sign(context.Background(), info.Ref, signer.ES256, randomInput(signer.ES256))
	wantKind(t, err, errs.FailedPrecondition)
}

func TestSignBadInput(t *testing.T) {
	b := openTest(t)
	ctx := context.Background()
	info := mustCreate(t, b, "p256", signer.ES256, 0)
	_, err := b.Sign(ctx, info.Ref, signer.ES256, make([]byte, 31))
	wantKind(t, err, errs.InvalidArgument)
	_, err = b.Sign(ctx, info.Ref, signer.ES384, make([]byte, 48))
	wantKind(t, err, errs.FailedPrecondition) // a P-256 key cannot sign ES384
	_, err = b.Sign(ctx, "pkcs11:token=other;object=p256", signer.ES256, make([]byte, 32))
	wantKind(t, err, errs.InvalidArgument)
	_, err = b.Sign(ctx, b.NameRef("missing"), signer.ES256, make([]byte, 32))
	wantKind(t, err, errs.Unavailable) // the backend is asked only for keys the keyring records
}

func TestDestroyRemovesBothObjectsAndIsRepeatable(t *testing.T) {
	b := openTest(t)
	ctx := context.Background()
	info := mustCreate(t, b, "gone", signer.EdDSA, 0)
	for range 2 {
		if err := b.DestroyKey(ctx, b.NameRef("gone")); err != nil {
			t.Fatal(err)
		}
	}
	_, err := b.Sign(ctx, info.Ref, signer.EdDSA, []byte("m"))
	wantKind(t, err, errs.Unavailable)
	mustCreate(t, b, "gone", signer.EdDSA, 0) // the label is free again
}

func TestSessionsClosedBehindThePoolsBack(t *testing.T) {
	b := openTest(t)
	ctx := context.Background()
	info := mustCreate(t, b, "reopen", signer.ES256, 0)
	var wg sync.WaitGroup
	for range 4 { // fill the pool with several idle sessions
		wg.Go(func() {
			if _, err := b.Sign(ctx, info.Ref, signer.ES256, randomInput(signer.ES256)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	slot, _ := b.findSlot()
	if err := b.mod.(*p11.Ctx).CloseAllSessions(slot); err != nil {
		t.Fatal(err)
	}
	in := randomInput(signer.ES256)
	sig, err := b.Sign(ctx, info.Ref, signer.ES256, in)
	if err != nil {
		t.Fatalf("first Sign after C_CloseAllSessions: %v", err)
	}
	if err := signer.Verify(info.Public, signer.ES256, in, sig); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentSigning(t *testing.T) {
	b := openTest(t)
	ctx := context.Background()
	keys := []signer.KeyInfo{mustCreate(t, b, "c1", signer.ES256, 0), mustCreate(t, b, "c2", signer.ES256K, 0), mustCreate(t, b, "c3", signer.EdDSA, 0)}
	algs := []signer.Algorithm{signer.ES256, signer.ES256K, signer.EdDSA}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 10 {
				k := (g + i) % len(keys)
				in := randomInput(algs[k])
				sig, err := b.Sign(ctx, keys[k].Ref, algs[k], in)
				if err == nil {
					err = signer.Verify(keys[k].Public, algs[k], in, sig)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Whether any caller waited depends on the scheduler (a goroutine
	// inside a cgo call may keep its P); TestCheckoutHonoursTheContext
	// counts waits deterministically.
	if s := b.PoolStats(); s.InUse != 0 || s.Size != 4 {
		t.Errorf("pool stats after the run: %+v (want none in use, size 4)", s)
	}
}

func TestCheckoutHonoursTheContext(t *testing.T) {
	cfg := Config(softhsmtest.Token(t))
	cfg.Sessions = 1
	b, err := Open(context.Background(), "hsm-one", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	info := mustCreate(t, b, "busy", signer.ES256, 0)
	held, err := b.pool.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	in := randomInput(signer.ES256)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = b.Sign(ctx, info.Ref, signer.ES256, in)
	wantKind(t, err, errs.ResourceExhausted)

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	_, err = b.Sign(ctx, info.Ref, signer.ES256, in)
	wantKind(t, err, errs.Canceled)

	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err = b.Sign(ctx, info.Ref, signer.ES256, in)
	wantKind(t, err, errs.DeadlineExceeded)

	if s := b.PoolStats(); s.Waits != 2 || s.InUse != 1 {
		t.Fatalf("pool stats with the one session held: %+v (want 2 waits, 1 in use)", s)
	}
	b.pool.put(held)
	if _, err := b.Sign(context.Background(), info.Ref, signer.ES256, in); err != nil {
		t.Fatalf("after the session came back: %v", err)
	}
}

func TestConfigRefusesLiteralPINs(t *testing.T) {
	cfg := Config(softhsmtest.Token(t))
	for _, pin := range []string{"not-a-reference", "", "env:", "file:"} {
		cfg.PIN = secret.Ref(pin)
		_, err := Open(context.Background(), "bad", cfg)
		wantKind(t, err, errs.InvalidArgument)
		if pin == "not-a-reference" && strings.Contains(err.Error(), pin) {
			t.Errorf("error repeats the PIN value: %v", err)
		}
	}
	cfg.PIN = "env:SIGIL_TEST_UNSET_PIN_VARIABLE"
	_, err := Open(context.Background(), "bad", cfg)
	wantKind(t, err, errs.InvalidArgument)
}

// Close while requests are in flight: the module is finalised and unloaded
// only after they finish (a C call into an unloaded library crashes the
// process), and every request after Close fails with Unavailable.
func TestCloseWaitsForRequestsInFlight(t *testing.T) {
	b, err := Open(context.Background(), "hsm-close", Config(softhsmtest.Token(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := mustCreate(t, b, "closing", signer.ES256, 0)
	started := make(chan struct{})
	var wg sync.WaitGroup
	var signed atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				if g == 0 && i == 2 {
					close(started)
				}
				_, err := b.Sign(ctx, key.Ref, signer.ES256, randomInput(signer.ES256))
				if err != nil {
					if !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "closed") {
						t.Errorf("after Close: %v (kind %v), want Unavailable naming the closed backend", err, errs.KindOf(err))
					}
					return
				}
				signed.Add(1)
			}
		})
	}
	<-started
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if signed.Load() < 2 {
		t.Fatalf("only %d signatures before Close; the test did not overlap them", signed.Load())
	}
	_, err = b.Public(ctx, key.Ref)
	wantKind(t, err, errs.Unavailable)
	if err := b.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

// Two backends on one token would each take the other's keys for
// unrecorded ones: the second is refused, and the token is free again
// once the first closes.
func TestOneBackendPerToken(t *testing.T) {
	cfg := Config(softhsmtest.Token(t))
	a, err := Open(context.Background(), "a", cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), "b", cfg)
	wantKind(t, err, errs.InvalidArgument)
	if !strings.Contains(err.Error(), `already served by backend "a"`) {
		t.Fatalf("refusal does not name the backend serving the token: %v", err)
	}
	a.Close()
	b, err := Open(context.Background(), "b", cfg)
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	b.Close()
}
