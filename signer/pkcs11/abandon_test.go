//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// slowModule holds every GenerateKeyPair until gate is closed (if set),
// and records whether a search ever ran while a generation was inside the
// module.
type slowModule struct {
	module
	gate       chan struct{}
	entered    chan struct{} // told of each generation that reached the module
	generating atomic.Int32
	overlaps   atomic.Int32
	pause      time.Duration
}

func (m *slowModule) GenerateKeyPair(h p11.SessionHandle, mech []*p11.Mechanism, pub, priv []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error) {
	m.generating.Add(1)
	defer m.generating.Add(-1)
	if m.entered != nil {
		m.entered <- struct{}{}
	}
	if m.gate != nil {
		<-m.gate
	}
	time.Sleep(m.pause)
	return m.module.GenerateKeyPair(h, mech, pub, priv)
}

func (m *slowModule) FindObjectsInit(h p11.SessionHandle, tmpl []*p11.Attribute) error {
	if m.generating.Load() > 0 {
		m.overlaps.Add(1)
	}
	return m.module.FindObjectsInit(h, tmpl)
}

func slowBackend(t *testing.T, m *slowModule, exclusive *bool) (*Backend, *Backend) {
	real := openTest(t)
	m.module = real.mod
	b := newBackend("hsm-slow", Config{Token: real.token, Sessions: 8, ExclusiveChanges: exclusive}, real.pin, real.lib, func() {})
	b.mod = m
	t.Cleanup(func() { b.Close() })
	return b, real
}

// A caller that gives up on a key generation still inside the module is
// told it failed, nothing is written into its result afterwards (the race
// detector watches), and the key pair the module then makes is destroyed:
// nothing records it.
func TestAbandonedGenerationIsRolledBack(t *testing.T) {
	m := &slowModule{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	b, real := slowBackend(t, m, nil)
	owner := []byte("abdn")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	info, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "abandoned", Algorithm: signer.ES256, Owner: owner})
	wantKind(t, err, errs.DeadlineExceeded)
	if info.Ref != "" || info.Public != nil {
		t.Fatalf("an abandoned generation answered %+v", info)
	}
	<-m.entered
	close(m.gate) // the module finishes the generation nobody waits for
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys, err := real.ListKeys(context.Background(), owner)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(keys, func(k signer.ListedKey) bool { return k.Name == "abandoned" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the abandoned key pair is still in the token: %+v", keys)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The backend still works, and a generation waited for is kept.
	kept, err := b.CreateKey(context.Background(), signer.CreateKeyRequest{Name: "kept", Algorithm: signer.ES256, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	in := randomInput(signer.ES256)
	sig, err := real.Sign(context.Background(), kept.Ref, signer.ES256, in)
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.Verify(kept.Public, signer.ES256, in, sig); err != nil {
		t.Fatal(err)
	}
}

// Signing calls abandoned at their deadline never write into their
// callers' results (run under -race).
func TestAbandonedSignaturesWriteNothing(t *testing.T) {
	real := openTest(t)
	key := mustCreate(t, real, "abandon-sign", signer.ES256, 0)
	m := &hungModule{module: real.mod, release: make(chan struct{})}
	b := newBackend("hsm-hung", Config{Token: real.token, Sessions: 4}, real.pin, real.lib, func() {})
	b.mod = m
	if _, err := b.Sign(context.Background(), key.Ref, signer.ES256, randomInput(signer.ES256)); err != nil {
		t.Fatal(err)
	}
	m.hung.Store(true)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			sig, err := b.Sign(ctx, key.Ref, signer.ES256, randomInput(signer.ES256))
			if err == nil || sig != nil {
				t.Errorf("a signature from a hung device: %x, %v", sig, err)
			}
		}()
	}
	wg.Wait()
	m.answer()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// With exclusive changes (SoftHSM's default), no search runs while a key
// pair is generated and nothing fails; without them searches do overlap
// (the test can tell), and SoftHSM fails generations and listings alike
// (CKR_GENERAL_ERROR, CKR_OBJECT_HANDLE_INVALID, CKR_BUFFER_TOO_SMALL were
// seen), so failures are tolerated there.
func TestSearchesWaitForGenerations(t *testing.T) {
	for _, tc := range []struct {
		name      string
		exclusive *bool
		overlap   bool
	}{{"softhsm default", nil, false}, {"forced off", new(bool), true}} {
		t.Run(tc.name, func(t *testing.T) {
			m := &slowModule{pause: 20 * time.Millisecond}
			b, _ := slowBackend(t, m, tc.exclusive)
			owner := []byte("excl")
			ctx := context.Background()
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := range 3 {
						name := "excl-" + string(rune('a'+i)) + string(rune('a'+j))
						if _, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: name, Algorithm: signer.ES256, Owner: owner}); err != nil && !tc.overlap {
							t.Error(err)
						}
					}
				}()
			}
			var searchers sync.WaitGroup
			for range 2 {
				searchers.Add(1)
				go func() {
					defer searchers.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := b.ListKeys(ctx, owner); err != nil && !tc.overlap {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(stop)
			searchers.Wait()
			if got := m.overlaps.Load() > 0; got != tc.overlap {
				t.Fatalf("searches during generations: %d, want overlap %v", m.overlaps.Load(), tc.overlap)
			}
			if tc.exclusive == nil && !b.exclusive.Load() {
				t.Fatal("SoftHSM was not recognised as needing exclusive changes")
			}
		})
	}
}

// A token that shows no objects at all (its storage gone) is an outage,
// not a missing key: the error does not carry ErrKeyMissing, so no alarm
// tells the operator to restore or revoke a key.
func TestEmptyTokenIsAnOutageNotAMissingKey(t *testing.T) {
	real := openTest(t)
	key := mustCreate(t, real, "blind", signer.ES256, 0)
	m := &blindModule{module: real.mod}
	b := newBackend("hsm-blind", Config{Token: real.token, Sessions: 2}, real.pin, real.lib, func() {})
	b.mod = m
	t.Cleanup(func() { b.Close() })
	m.blind.Store(true)
	_, err := b.Sign(context.Background(), key.Ref, signer.ES256, randomInput(signer.ES256))
	wantKind(t, err, errs.Unavailable)
	if errors.Is(err, signer.ErrKeyMissing) {
		t.Fatalf("an empty token was reported as a missing key: %v", err)
	}
	m.blind.Store(false)
	if _, err := b.Sign(context.Background(), key.Ref, signer.ES256, randomInput(signer.ES256)); err != nil {
		t.Fatal(err)
	}
}

// blindModule finds nothing while blind is set, as SoftHSM does when its
// token storage went away.
type blindModule struct {
	module
	blind atomic.Bool
}

func (m *blindModule) FindObjects(h p11.SessionHandle, max int) ([]p11.ObjectHandle, bool, error) {
	objs, more, err := m.module.FindObjects(h, max)
	if m.blind.Load() {
		return nil, false, err
	}
	return objs, more, err
}

// A slow key generation (RSA-3072 on a busy machine takes seconds) is no
// outage: the health probe, which must not search the token meanwhile,
// does not wait for it and finds the backend up.
func TestProbeDoesNotWaitForASlowGeneration(t *testing.T) {
	m := &slowModule{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	b, _ := slowBackend(t, m, nil)
	done := make(chan error, 1)
	go func() {
		_, err := b.CreateKey(context.Background(), signer.CreateKeyRequest{Name: "slow", Algorithm: signer.ES256})
		done <- err
	}()
	<-m.entered
	start := time.Now()
	h := b.health.Check(context.Background())
	if !h.Up || time.Since(start) > time.Second {
		t.Fatalf("probe during a generation: %+v after %v, want up at once", h, time.Since(start))
	}
	h = b.health.Check(context.Background()) // a second probe: the threshold is two
	if !h.Up {
		t.Fatalf("second probe during a generation: %+v", h)
	}
	close(m.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Destroying a key forgets only its own cached handles: signing with the
// others needs no new search (which, on SoftHSM, would wait behind any
// generation in progress).
func TestDestroyForgetsOnlyItsOwnHandles(t *testing.T) {
	b := openTest(t)
	ctx := context.Background()
	gone, kept := mustCreate(t, b, "gone", signer.ES256, 0), mustCreate(t, b, "kept", signer.ES256, 0)
	for _, k := range []signer.KeyInfo{gone, kept} {
		if _, err := b.Sign(ctx, k.Ref, signer.ES256, randomInput(signer.ES256)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Public(ctx, b.NameRef("gone")); err != nil { // cached under its name alone too
		t.Fatal(err)
	}
	if err := b.DestroyKey(ctx, gone.Ref); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.cache.Load(kept.Ref); !ok {
		t.Fatal("destroying one key dropped another's cached handle")
	}
	for _, ref := range []string{gone.Ref, b.NameRef("gone")} {
		if _, ok := b.cache.Load(ref); ok {
			t.Fatalf("the destroyed key's handle is still cached under %s", ref)
		}
	}
}

// The health probe's own object deleted behind Sigil's back (by anyone
// with the PIN) takes the backend down only until its recovery puts the
// object back; the keys sign again.
func TestDeletedCanaryIsRestored(t *testing.T) {
	b := openTest(t)
	ctx := context.Background()
	key := mustCreate(t, b, "beside-the-canary", signer.ES256, 0)
	p11, h := rawSession(t, b)
	objs, err := b.findCanary(h)
	if err != nil || len(objs) != 1 {
		t.Fatal(objs, err)
	}
	if err := p11.DestroyObject(h, objs[0]); err != nil {
		t.Fatal(err)
	}
	var health signer.Health
	for range 4 {
		health = b.health.Check(ctx)
	}
	if !health.Up {
		t.Fatalf("after the probe's object was deleted: %+v, want restored and up", health)
	}
	if _, err := b.Sign(ctx, key.Ref, signer.ES256, randomInput(signer.ES256)); err != nil {
		t.Fatal(err)
	}
}
