package keyring_test

import (
	"context"
	"crypto"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

var testPolicy = jwt.Policy{Schedule: keyring.Schedule{RotateEvery: time.Hour, PublishAhead: 20 * time.Minute, MaxTokenTTL: 10 * time.Minute, Skew: time.Minute}}

func createJWT(t *testing.T, r *keyring.Keyring, id string) *keyring.Key {
	t.Helper()
	p := testPolicy
	k, err := r.Create(context.Background(), keyring.CreateSpec{ID: id, Purpose: jwt.Name, Algorithm: signer.ES256, Policy: &p})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func states(k *keyring.Key) string {
	var s []string
	for _, g := range k.Generations {
		s = append(s, string(g.State))
	}
	return strings.Join(s, ",")
}

func TestPolicyValidation(t *testing.T) {
	bad := []keyring.Schedule{
		{RotateEvery: 0, PublishAhead: time.Minute, MaxTokenTTL: time.Minute},
		{RotateEvery: time.Hour, PublishAhead: time.Minute, MaxTokenTTL: time.Minute, Skew: time.Minute},   // A − S = 0: no max-age
		{RotateEvery: time.Hour, PublishAhead: 2 * time.Hour, MaxTokenTTL: time.Minute, Skew: time.Second}, // A > P
		{RotateEvery: time.Hour, PublishAhead: time.Minute, MaxTokenTTL: 0, Skew: time.Second},
		{RotateEvery: time.Hour, PublishAhead: time.Minute, MaxTokenTTL: time.Minute, Skew: -time.Second},
	}
	for _, p := range bad {
		if err := p.Validate(); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%+v: %v", p, err)
		}
	}
	if err := testPolicy.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := testPolicy.MaxAge(); got != keyring.MaxCacheAge {
		t.Errorf("max-age %v, want the %v cap", got, keyring.MaxCacheAge)
	}
	short := jwt.Policy{Schedule: keyring.Schedule{RotateEvery: time.Minute, PublishAhead: 30 * time.Second, MaxTokenTTL: time.Minute, Skew: 5 * time.Second}}
	if short.MaxAge() != 25*time.Second {
		t.Errorf("max-age %v, want A − S", short.MaxAge())
	}
}

func TestRotateRevokeAndPolicyChanges(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	ctx := context.Background()
	createJWT(t, r, "auth")
	r.Create(ctx, keyring.CreateSpec{ID: "raw", Purpose: raw.Name, Algorithm: signer.ES256})
	r.Create(ctx, keyring.CreateSpec{ID: "wallet", Purpose: eth.Name, Algorithm: signer.ES256K})

	k, err := r.Rotate(ctx, "raw", false) // a raw key's new generation signs at once
	if err != nil || states(k) != "retiring,active" {
		t.Fatalf("rotating a raw key: %v %s", err, states(k))
	}
	_, err = r.Rotate(ctx, "wallet", false)
	if wantKind(t, err, errs.FailedPrecondition); !strings.Contains(err.Error(), "do not rotate") {
		t.Errorf("eth rotation error does not say why: %v", err)
	}
	_, err = r.SetPolicy(ctx, "raw", jwt.Name, &testPolicy)
	wantKind(t, err, errs.FailedPrecondition)
	_, err = r.SetPolicy(ctx, "auth", jwt.Name, &jwt.Policy{Schedule: keyring.Schedule{PublishAhead: 2 * time.Hour}})
	wantKind(t, err, errs.InvalidArgument)

	// Manual rotation: pending for A; asking again reuses it.
	k, err = r.Rotate(ctx, "auth", false)
	if err != nil || states(k) != "active,pending" || !k.Generations[1].ActivateAt.Equal(e.now.Add(testPolicy.PublishAhead)) {
		t.Fatalf("rotate: %v %s %v", err, states(k), k.Generations[1].ActivateAt)
	}
	if k, _ = r.Rotate(ctx, "auth", false); states(k) != "active,pending" {
		t.Fatalf("second rotate: %s", states(k))
	}
	// --now activates the pending one; the old one retires for T + S.
	if k, err = r.Rotate(ctx, "auth", true); err != nil || states(k) != "retiring,active" {
		t.Fatalf("rotate --now: %v %s", err, states(k))
	}
	if !k.Generations[0].UnpublishAt.Equal(e.now.Add(testPolicy.MaxTokenTTL + testPolicy.Skew)) {
		t.Fatalf("unpublish at %v", k.Generations[0].UnpublishAt)
	}

	// Revocation.
	_, err = r.Revoke(ctx, "auth", 9)
	wantKind(t, err, errs.NotFound)
	if k, err = r.Revoke(ctx, "auth", 2); err != nil || states(k) != "retiring,revoked,active" {
		t.Fatalf("revoking the active generation: %v %s", err, states(k))
	}
	s, err := r.ForSigning(ctx, "auth", jwt.Name)
	if err != nil || s.Generation.Number != 3 {
		t.Fatalf("after revocation, generation %d signs (%v)", s.Generation.Number, err)
	}
	if k, err = r.Revoke(ctx, "auth", 2); err != nil || states(k) != "retiring,revoked,active" {
		t.Fatalf("revoking twice: %v %s", err, states(k))
	}

	// Shortening the cache window holds back the next activation until
	// caches under the old window expire.
	k, _ = r.Rotate(ctx, "auth", false)
	oldMaxAge := jwt.PolicyOf(k).MaxAge()
	k, err = r.SetPolicy(ctx, "auth", jwt.Name, &jwt.Policy{Schedule: keyring.Schedule{PublishAhead: 5 * time.Minute, Skew: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	floor := e.now.Add(oldMaxAge + 30*time.Second)
	if k.ActivateNotBefore.Before(floor) || k.Generations[3].ActivateAt.Before(floor) || jwt.PolicyOf(k).MaxAge() != 4*time.Minute+30*time.Second {
		t.Fatalf("policy change: floor %v, pending at %v, max-age %v", k.ActivateNotBefore, k.Generations[3].ActivateAt, jwt.PolicyOf(k).MaxAge())
	}
}

// atomicClock is a fake clock safe for concurrent schedulers.
type atomicClock struct{ ns atomic.Int64 }

func (c *atomicClock) now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Two keyrings with memories of their own over one store stand for two
// replicas whose schedulers race. Lost races (Aborted) and HSM calls that
// collide (Unavailable) are retried on a later tick; what the store holds
// must obey the invariants after every round.
func TestRacingSchedulersKeepOneActive(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	clk := &atomicClock{}
	clk.ns.Store(e.now.UnixNano())
	replica := func() *keyring.Keyring {
		r, err := keyring.New(ctx, keyring.Options{Store: e.store, Backends: map[string]signer.Backend{"hsm-a": e.hsm},
			DefaultBackend: "hsm-a", Now: clk.now, Retention: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := replica()
	createJWT(t, a, "busy")
	b := replica()
	var wg sync.WaitGroup
	for round := 0; round < 10*12; round++ { // 10 periods in 5-minute steps
		for _, r := range []*keyring.Keyring{a, b, a, b} {
			wg.Go(func() {
				if err := r.Tick(ctx); err != nil && !errs.Is(err, errs.Aborted) && !errs.Is(err, errs.Unavailable) {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		k, err := e.store.Get(ctx, "busy")
		if err != nil {
			t.Fatal(err)
		}
		if s := states(k); strings.Count(s, "active") != 1 || strings.Count(s, "pending") > 1 {
			t.Fatalf("round %d: %s", round, s)
		}
		clk.ns.Add(int64(5 * time.Minute))
	}
	a.Tick(ctx) // a last round without a rival settles what was lost
	k, _ := e.store.Get(ctx, "busy")
	if n := len(k.Generations); n < 10 || n > 12 || strings.Contains(states(k), "creating") {
		t.Fatalf("%d generations after 10 periods: %s", n, states(k))
	}
}

func TestRestartInTheMiddleOfARotation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.keyring(t, nil)
	createJWT(t, r, "auth")
	// A crash after the HSM made generation 2 but before it was recorded
	// as pending: the record says "creating", the token holds the pair.
	k, _ := e.store.Get(ctx, "auth")
	k.Generations = append(k.Generations, keyring.Generation{Number: 2, State: keyring.StateCreating, Name: "auth.g2", Ref: e.hsm.NameRef("auth.g2"), CreatedAt: e.now})
	if _, err := e.store.Put(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hsm.CreateKey(ctx, signer.CreateKeyRequest{Name: "auth.g2", Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(testPolicy.RotateEvery) // the rotation is overdue
	r = e.keyring(t, nil)                     // restart
	if err := r.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ = r.Get(ctx, "auth")
	if states(k) != "active,pending" {
		t.Fatalf("after restart: %s", states(k))
	}
	// The abandoned pair was destroyed before its generation was made
	// again, so exactly one pair answers to the label.
	pub, err := e.hsm.Public(ctx, e.hsm.NameRef("auth.g2"))
	if err != nil || !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Generations[1].Public()) {
		t.Fatalf("token and keyring disagree on generation 2: %v", err)
	}
	if _, err := r.ForSigning(ctx, "auth", jwt.Name); err != nil {
		t.Fatal(err)
	}
}

// A day of hourly rotations with an hour's retention: the record keeps the
// newest KeepDestroyed destroyed generations, and numbers go on from the
// highest one ever given.
func TestDestroyedGenerationsArePruned(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, err := keyring.New(ctx, keyring.Options{Store: e.store, Backends: map[string]signer.Backend{"hsm-a": e.hsm}, DefaultBackend: "hsm-a",
		Now: func() time.Time { return e.now }, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	createJWT(t, r, "auth")
	for range 24 * 12 {
		e.now = e.now.Add(5 * time.Minute)
		if err := r.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	k, _ := r.Get(ctx, "auth")
	var destroyed []int
	top, seen := 0, map[int]bool{}
	for _, g := range k.Generations {
		if seen[g.Number] {
			t.Fatalf("generation %d twice: %s", g.Number, states(k))
		}
		seen[g.Number], top = true, max(top, g.Number)
		if g.State == keyring.StateDestroyed {
			destroyed = append(destroyed, g.Number)
		}
	}
	if top < 20 || len(destroyed) != keyring.KeepDestroyed {
		t.Fatalf("%d generations given, record keeps %v destroyed of %s", top, destroyed, states(k))
	}
	for n := destroyed[0]; n <= top; n++ { // only the oldest were dropped
		if !seen[n] {
			t.Fatalf("generation %d dropped while older %d kept: %s", n, destroyed[0], states(k))
		}
	}
	if _, ok := k.Active(); !ok {
		t.Fatal("no active generation")
	}
	k, err = r.Rotate(ctx, "auth", true)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := k.Active(); a.Number != top+1 {
		t.Fatalf("new generation numbered %d after %d", a.Number, top)
	}
}

// slowBackend runs hook inside CreateKey: between the record of a
// creating generation and the write that places it.
type slowBackend struct {
	*pkcs11.Backend
	hook func()
}

func (s *slowBackend) CreateKey(ctx context.Context, req signer.CreateKeyRequest) (signer.KeyInfo, error) {
	if h := s.hook; h != nil {
		s.hook = nil
		h()
	}
	return s.Backend.CreateKey(ctx, req)
}

// A schedule changed while a rotation's key pair is being made is the
// one the new generation is published under: it activates no sooner than
// the new publish-ahead (invariant 2), by hand and by the scheduler.
func TestAPolicyChangedDuringARotationCounts(t *testing.T) {
	ctx := context.Background()
	for _, byScheduler := range []bool{false, true} {
		e := newEnv(t)
		sb := &slowBackend{Backend: e.hsm}
		r, err := keyring.New(ctx, keyring.Options{Store: e.store, Backends: map[string]signer.Backend{"hsm-a": sb}, DefaultBackend: "hsm-a",
			Now: func() time.Time { return e.now }})
		if err != nil {
			t.Fatal(err)
		}
		old := jwt.Policy{Schedule: keyring.Schedule{RotateEvery: time.Hour, PublishAhead: 30 * time.Second, MaxTokenTTL: time.Minute, Skew: time.Second}}
		if _, err := r.Create(ctx, keyring.CreateSpec{ID: "auth", Purpose: jwt.Name, Algorithm: signer.ES256, Policy: &old}); err != nil {
			t.Fatal(err)
		}
		sb.hook = func() {
			if _, err := r.SetPolicy(ctx, "auth", jwt.Name, &jwt.Policy{Schedule: keyring.Schedule{PublishAhead: 30 * time.Minute}}); err != nil {
				t.Error(err)
			}
		}
		if byScheduler {
			e.now = e.now.Add(time.Hour - 29*time.Second) // the next generation is due to be published
			err = r.Tick(ctx)
		} else {
			_, err = r.Rotate(ctx, "auth", false)
		}
		if err != nil {
			t.Fatal(err)
		}
		k, _ := r.Get(ctx, "auth")
		pending := false
		for _, g := range k.Generations {
			if g.State == keyring.StatePending {
				pending = true
				if g.ActivateAt.Sub(g.PublishedAt) < 30*time.Minute {
					t.Errorf("scheduler %v: the new generation signs %v after publication, under a publish-ahead of 30m", byScheduler, g.ActivateAt.Sub(g.PublishedAt))
				}
			}
		}
		if !pending {
			t.Errorf("scheduler %v: no pending generation: %s", byScheduler, states(k))
		}
	}
}

// Creating scheduled keys while the scheduler ticks: every creation
// answers success (never "a generation is already being created"), and
// each key has exactly one generation, active. The store's
// compare-and-swap orders the two, not timing.
func TestCreateNeverRacesTheScheduler(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ticker sync.WaitGroup
	ticker.Add(1)
	go func() {
		defer ticker.Done()
		for ctx.Err() == nil {
			_ = r.Tick(ctx)
		}
	}()
	const n = 30
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := testPolicy
			_, err := r.Create(context.Background(), keyring.CreateSpec{ID: fmt.Sprintf("race-%d", i), Purpose: jwt.Name, Algorithm: signer.ES256, Policy: &p})
			if err != nil {
				failed.Add(1)
				t.Errorf("create race-%d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	cancel()
	ticker.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d creations failed", failed.Load(), n)
	}
	for i := range n {
		k, err := r.Get(context.Background(), fmt.Sprintf("race-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if states(k) != "active" {
			t.Errorf("%s: generations %s, want one, active", k.ID, states(k))
		}
	}
}

// tickingStore runs the scheduler inside the first update of each new
// key, the moment a racing tick would see the key's first record.
type tickingStore struct {
	keyring.Store
	r      *keyring.Keyring
	inTick atomic.Bool
	seen   sync.Map
}

func (s *tickingStore) Put(ctx context.Context, k *keyring.Key) (int64, error) {
	if k.Revision == 0 {
		return s.Store.Put(ctx, k)
	}
	if _, dup := s.seen.LoadOrStore(k.ID, true); !dup && s.inTick.CompareAndSwap(false, true) {
		_ = s.r.Tick(ctx)
		s.inTick.Store(false)
	}
	return s.Store.Put(ctx, k)
}

// The scheduler's tick landing right after a scheduled key's first record
// finds the generation being created and leaves the key to its creation.
func TestSchedulerTickBetweenCreationSteps(t *testing.T) {
	e := newEnv(t)
	s := &tickingStore{Store: e.store}
	s.r = e.keyring(t, s)
	for i := range 3 {
		p := testPolicy
		id := fmt.Sprintf("window-%d", i)
		k, err := s.r.Create(context.Background(), keyring.CreateSpec{ID: id, Purpose: jwt.Name, Algorithm: signer.ES256, Policy: &p})
		if err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		if states(k) != "active" {
			t.Fatalf("%s: generations %s, want one, active", id, states(k))
		}
	}
}
