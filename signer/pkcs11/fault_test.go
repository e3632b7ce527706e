package pkcs11

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// faultModule wraps the real module. It fails the next calls of a named
// function with queued errors, and while gone is set it behaves like a
// module whose token was pulled: no slots, and CKR_DEVICE_REMOVED.
type faultModule struct {
	module
	gone  atomic.Bool
	mu    sync.Mutex
	queue map[string][]error
	calls map[string]int // calls that reached the real module
	// hang, when set, holds every Sign until it is closed, like a
	// network HSM that stopped answering; hanging learns of each one.
	hang    chan struct{}
	hanging chan struct{}
}

func (f *faultModule) callsOf(fn string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[fn]
}

func (f *faultModule) fail(fn string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue[fn] = append(f.queue[fn], errs...)
}

func (f *faultModule) inject(fn string) error {
	if f.gone.Load() {
		return p11.Error(p11.CKR_DEVICE_REMOVED)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if q := f.queue[fn]; len(q) > 0 {
		f.queue[fn] = q[1:]
		return q[0]
	}
	f.calls[fn]++
	return nil
}

func (f *faultModule) GetSlotList(present bool) ([]uint, error) {
	if f.gone.Load() {
		return nil, nil
	}
	return f.module.GetSlotList(present)
}

func (f *faultModule) OpenSession(slot, flags uint) (p11.SessionHandle, error) {
	if err := f.inject("OpenSession"); err != nil {
		return 0, err
	}
	return f.module.OpenSession(slot, flags)
}

func (f *faultModule) SignInit(h p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	if err := f.inject("SignInit"); err != nil {
		return err
	}
	return f.module.SignInit(h, m, o)
}

func (f *faultModule) Sign(h p11.SessionHandle, msg []byte) ([]byte, error) {
	if err := f.inject("Sign"); err != nil {
		return nil, err
	}
	if f.hang != nil {
		f.hanging <- struct{}{}
		<-f.hang
	}
	return f.module.Sign(h, msg)
}

// faulty wraps a real backend's module in a faultModule, with a clock the
// test moves.
func faulty(t *testing.T) (*Backend, *faultModule, *time.Time) {
	real := openTest(t)
	f := &faultModule{module: real.mod, queue: map[string][]error{}, calls: map[string]int{}}
	b := newBackend("hsm-fault", Config{Token: real.token, Sessions: 2}, real.pin, f, func() {})
	now := time.Now()
	b.now = func() time.Time { return now }
	t.Cleanup(func() { b.Close() })
	return b, f, &now
}

func TestRecoversOnceFromEachStaleState(t *testing.T) {
	b, f, _ := faulty(t)
	ctx := context.Background()
	info := mustCreate(t, b, "stale", signer.ES256, 0)
	for _, rv := range []uint{p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_USER_NOT_LOGGED_IN,
		p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_OBJECT_HANDLE_INVALID} {
		f.fail("SignInit", p11.Error(rv))
		in := randomInput(signer.ES256)
		sig, err := b.Sign(ctx, info.Ref, signer.ES256, in)
		if err != nil {
			t.Fatalf("after 0x%x: %v", rv, err)
		}
		if err := signer.Verify(info.Public, signer.ES256, in, sig); err != nil {
			t.Fatal(err)
		}
	}
	// Twice in a row is not retried a second time.
	f.fail("SignInit", p11.Error(p11.CKR_SESSION_CLOSED), p11.Error(p11.CKR_SESSION_CLOSED))
	_, err := b.Sign(ctx, info.Ref, signer.ES256, randomInput(signer.ES256))
	wantKind(t, err, errs.Unavailable)
	// An error that says nothing is stale is not retried at all.
	f.fail("Sign", p11.Error(p11.CKR_DATA_LEN_RANGE))
	before := f.callsOf("SignInit")
	_, err = b.Sign(ctx, info.Ref, signer.ES256, randomInput(signer.ES256))
	wantKind(t, err, errs.InvalidArgument)
	if f.callsOf("SignInit")-before != 1 {
		t.Errorf("a non-recoverable error was retried")
	}
}

func TestDeadTokenFailsFastAndRecoversByItself(t *testing.T) {
	b, f, now := faulty(t)
	ctx := context.Background()
	info := mustCreate(t, b, "dead", signer.ES256K, 0)
	f.gone.Store(true)
	_, err := b.Sign(ctx, info.Ref, signer.ES256K, randomInput(signer.ES256K))
	wantKind(t, err, errs.Unavailable)
	if b.Healthy(ctx) == nil {
		t.Error("Healthy with the token gone")
	}
	// While marked down, requests fail without touching the module.
	before := f.callsOf("OpenSession") + f.callsOf("SignInit")
	for range 100 {
		_, err = b.Sign(ctx, info.Ref, signer.ES256K, randomInput(signer.ES256K))
		wantKind(t, err, errs.Unavailable)
	}
	if f.callsOf("OpenSession")+f.callsOf("SignInit") != before {
		t.Error("requests reached the module while the token was marked down")
	}
	f.gone.Store(false)
	*now = now.Add(downFor + time.Millisecond)
	in := randomInput(signer.ES256K)
	sig, err := b.Sign(ctx, info.Ref, signer.ES256K, in)
	if err != nil {
		t.Fatalf("after the token came back: %v", err)
	}
	if err := signer.Verify(info.Public, signer.ES256K, in, sig); err != nil {
		t.Fatal(err)
	}
	if err := b.Healthy(ctx); err != nil {
		t.Fatal(err)
	}
}

// A module that stops answering must not hang shutdown, nor be unloaded
// under the call still inside it: Close gives up after closeWait and
// leaves it loaded, and a Close after the call returned releases it.
func TestCloseLeavesAHungModuleLoaded(t *testing.T) {
	real := openTest(t)
	key := mustCreate(t, real, "hung", signer.ES256, 0)
	f := &faultModule{module: real.mod, queue: map[string][]error{}, calls: map[string]int{}, hang: make(chan struct{}), hanging: make(chan struct{}, 1)}
	var released atomic.Bool
	b := newBackend("hsm-hung", Config{Token: real.token, Sessions: 2}, real.pin, f, func() { released.Store(true) })
	b.closeWait = 200 * time.Millisecond
	signed := make(chan error, 1)
	go func() {
		_, err := b.Sign(context.Background(), key.Ref, signer.ES256, randomInput(signer.ES256))
		signed <- err
	}()
	<-f.hanging
	start := time.Now()
	err := b.Close()
	wantKind(t, err, errs.Unavailable)
	if released.Load() || time.Since(start) > 2*time.Second {
		t.Fatalf("Close released the module under a hung call (%v), or hung itself (%v)", released.Load(), time.Since(start))
	}
	close(f.hang)
	if err := <-signed; err != nil {
		t.Fatalf("the call that was inside the module: %v", err)
	}
	if err := b.Close(); err != nil || !released.Load() {
		t.Fatalf("Close after the call returned: %v, released %v", err, released.Load())
	}
}
