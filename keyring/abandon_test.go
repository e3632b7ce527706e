package keyring_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

// blinkingHSM fails key generation and destruction while down, and says
// so in its health, as a token whose storage went away does.
type blinkingHSM struct {
	*pkcs11.Backend
	down    atomic.Bool
	timeout atomic.Bool // CreateKey makes the pair but answers DeadlineExceeded
}

func (b *blinkingHSM) CreateKey(ctx context.Context, req signer.CreateKeyRequest) (signer.KeyInfo, error) {
	if b.timeout.Load() {
		b.Backend.CreateKey(ctx, req)
		return signer.KeyInfo{}, errs.New(errs.DeadlineExceeded, "injected: the HSM did not answer in time")
	}
	if b.down.Load() {
		return signer.KeyInfo{}, errs.New(errs.Unavailable, "injected: token gone")
	}
	return b.Backend.CreateKey(ctx, req)
}

func (b *blinkingHSM) DestroyKey(ctx context.Context, ref string) error {
	if b.down.Load() {
		return errs.New(errs.Unavailable, "injected: token gone")
	}
	return b.Backend.DestroyKey(ctx, ref)
}

func (b *blinkingHSM) Health() signer.Health {
	if b.down.Load() {
		return signer.Health{Detail: "injected: token gone"}
	}
	return b.Backend.Health()
}

// A rotation or creation that failed while the backend was down, and
// could not be rolled back then, is rolled back as soon as the backend is
// back: the next rotation, or a retried creation of the same ID, works at
// once (it answered "a generation is already being created", or
// AlreadyExists, for the whole grace: 2 minutes by default).
func TestFailedCreationDuringAnOutageDoesNotBlockTheKey(t *testing.T) {
	e := newEnv(t)
	hsm := &blinkingHSM{Backend: e.hsm}
	r, err := keyring.New(context.Background(), keyring.Options{Store: e.store, Backends: map[string]signer.Backend{"hsm-a": hsm},
		DefaultBackend: "hsm-a", Now: func() time.Time { return e.now }, CreatingGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Create(ctx, keyring.CreateSpec{ID: "k", Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	hsm.down.Store(true)
	_, err = r.Rotate(ctx, "k", false)
	wantKind(t, err, errs.Unavailable)
	_, err = r.Create(ctx, keyring.CreateSpec{ID: "new", Purpose: raw.Name, Algorithm: signer.ES256})
	wantKind(t, err, errs.Unavailable)
	if err := r.Tick(ctx); err != nil && !errs.Is(err, errs.Unavailable) {
		t.Fatal(err) // while down, the rollback waits
	}
	hsm.down.Store(false)
	k, err := r.Rotate(ctx, "k", false)
	if err != nil {
		t.Fatalf("rotating once the backend is back: %v", err)
	}
	if states(k) != "retiring,active" {
		t.Fatalf("generations after the rotation: %s", states(k))
	}
	// The rolled-back generation's number is not given again: a rollback
	// decided on an older view of the key can never hit the new one.
	if g, _ := k.Active(); g.Number != 3 || g.Name != "k.g3" {
		t.Fatalf("the new generation is %d (%s), want 3: numbers are never reused", g.Number, g.Name)
	}
	if _, err := r.Create(ctx, keyring.CreateSpec{ID: "new", Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatalf("creating the ID again once the backend is back: %v", err)
	}
}

// A generation the backend did not answer in time may still be made after
// its caller gave up: its record stays "creating" (a rollback now could
// miss the pair), and the scheduler rolls it back, pair included, once it
// is the grace old. Nothing is left in the token that no record names.
func TestUnansweredGenerationIsRolledBackAfterTheGrace(t *testing.T) {
	e := newEnv(t)
	hsm := &blinkingHSM{Backend: e.hsm}
	r, err := keyring.New(context.Background(), keyring.Options{Store: e.store, Backends: map[string]signer.Backend{"hsm-a": hsm},
		DefaultBackend: "hsm-a", Now: func() time.Time { return e.now }, CreatingGrace: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Create(ctx, keyring.CreateSpec{ID: "k", Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	hsm.timeout.Store(true)
	_, err = r.Rotate(ctx, "k", false)
	wantKind(t, err, errs.DeadlineExceeded)
	hsm.timeout.Store(false)
	k, _ := e.store.Get(ctx, "k")
	if states(k) != "active,creating" {
		t.Fatalf("after an unanswered generation: %s, want its record kept", states(k))
	}
	if _, err := e.hsm.Public(ctx, e.hsm.NameRef("k.g2")); err != nil {
		t.Fatalf("the late pair: %v", err)
	}
	e.now = e.now.Add(2 * time.Minute)
	if err := r.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ = e.store.Get(ctx, "k")
	if states(k) != "active" {
		t.Fatalf("after the grace: %s", states(k))
	}
	if _, err := e.hsm.Public(ctx, e.hsm.NameRef("k.g2")); !errors.Is(err, signer.ErrKeyMissing) {
		t.Fatalf("the late pair after the rollback: %v", err)
	}
}
