//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
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

// faulty wraps a real backend's module in a faultModule. The backend's
// health monitor is not started: the test probes with Check.
func faulty(t *testing.T) (*Backend, *faultModule) {
	real := openTest(t)
	f := &faultModule{module: real.mod, queue: map[string][]error{}, calls: map[string]int{}}
	b := newBackend("hsm-fault", Config{Token: real.token, Sessions: 2}, real.pin, real.lib, func() {})
	b.mod = f
	t.Cleanup(func() { b.Close() })
	return b, f
}

func TestRecoversOnceFromEachStaleState(t *testing.T) {
	b, f := faulty(t)
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
	b, f := faulty(t)
	ctx := context.Background()
	info := mustCreate(t, b, "dead", signer.ES256K, 0)
	f.gone.Store(true)
	_, err := b.Sign(ctx, info.Ref, signer.ES256K, randomInput(signer.ES256K))
	wantKind(t, err, errs.Unavailable)
	if h := b.health.Check(ctx); !h.Up {
		t.Fatal("down after one failed probe; the threshold is two")
	}
	if h := b.health.Check(ctx); h.Up || h.Detail == "" || h.Recoveries != 1 {
		t.Fatalf("after two failed probes: %+v, want down with a reason and one recovery tried", h)
	}
	// While down, requests fail without touching the module.
	before := f.callsOf("OpenSession") + f.callsOf("SignInit")
	for range 100 {
		_, err = b.Sign(ctx, info.Ref, signer.ES256K, randomInput(signer.ES256K))
		wantKind(t, err, errs.Unavailable)
		if !strings.Contains(err.Error(), "backend hsm-fault unavailable") {
			t.Fatalf("fail-fast error does not name the backend: %v", err)
		}
	}
	if f.callsOf("OpenSession")+f.callsOf("SignInit") != before {
		t.Error("requests reached the module while the token was marked down")
	}
	f.gone.Store(false)
	if h := b.health.Check(ctx); !h.Up {
		t.Fatalf("token back, probe still down: %+v", h)
	}
	in := randomInput(signer.ES256K)
	sig, err := b.Sign(ctx, info.Ref, signer.ES256K, in)
	if err != nil {
		t.Fatalf("after the token came back: %v", err)
	}
	if err := signer.Verify(info.Public, signer.ES256K, in, sig); err != nil {
		t.Fatal(err)
	}
}

// A key object the keyring records but the token does not show is an
// outage (Unavailable, naming ErrKeyMissing), never NotFound.
func TestMissingObjectIsUnavailableNotNotFound(t *testing.T) {
	b := openTest(t)
	ctx := context.Background()
	info := mustCreate(t, b, "vanishing", signer.ES256, 0)
	if err := b.DestroyKey(ctx, info.Ref); err != nil {
		t.Fatal(err)
	}
	_, err := b.Sign(ctx, info.Ref, signer.ES256, randomInput(signer.ES256))
	wantKind(t, err, errs.Unavailable)
	if !errors.Is(err, signer.ErrKeyMissing) {
		t.Fatalf("error does not carry ErrKeyMissing: %v", err)
	}
	if h := b.Health(); !h.Up {
		t.Fatalf("one missing object took the whole backend down: %+v", h)
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
	b := newBackend("hsm-hung", Config{Token: real.token, Sessions: 2}, real.pin, real.lib, func() { released.Store(true) })
	b.mod = f
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

// The token's storage disappears (a network HSM or a remounted volume
// looks the same) and returns, on a real SoftHSM: meanwhile every request
// is Unavailable, never NotFound, and fails fast once the probe has seen
// it; afterwards the backend re-initialises the module and signs again by
// itself, with no restart.
func TestTokenStorageGoneAndBack(t *testing.T) {
	cfg := Config(softhsmtest.Token(t))
	cfg.HealthInterval = 100 * time.Millisecond
	ctx := context.Background()
	b, err := Open(ctx, "hsm-blip", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	info := mustCreate(t, b, "blip", signer.ES256, 0)
	dir := softhsmtest.TokenDir(t, cfg.Token)
	// Out of SoftHSM's token folder: a folder left inside it is found as a
	// token again by the next C_Initialize.
	aside := filepath.Join(t.TempDir(), "aside")
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := os.Rename(aside, dir); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()
	sign := func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := b.Sign(ctx, info.Ref, signer.ES256, randomInput(signer.ES256))
		return err
	}
	for deadline := time.Now().Add(5 * time.Second); b.Health().Up; {
		if err := sign(); err != nil && !errs.Is(err, errs.Unavailable) {
			t.Fatalf("during the fault: %v (kind %v), want Unavailable", err, errs.KindOf(err))
		} else if errors.Is(err, signer.ErrKeyMissing) {
			t.Fatalf("a token outage was reported as a missing key: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the health probe did not notice the token's storage was gone")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 20 {
		start := time.Now()
		err := sign()
		wantKind(t, err, errs.Unavailable)
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Fatalf("a request took %v while the backend was down; it should fail fast", took)
		}
	}
	restore()
	back := time.Now()
	for sign() != nil {
		if time.Since(back) > 10*time.Second {
			t.Fatalf("not signing 10 s after the storage returned: %v (%+v)", sign(), b.Health())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h := b.Health(); !h.Up || h.Recoveries == 0 {
		t.Fatalf("health after recovery: %+v, want up with a recovery counted", h)
	}
	t.Logf("signing again %v after the storage returned (%d recoveries)", time.Since(back).Round(time.Millisecond), b.Health().Recoveries)
}

// hungModule stops answering Sign and FindObjects while hung is set,
// like a network HSM that went silent: its calls return only when
// released.
type hungModule struct {
	module
	hung     atomic.Bool
	release  chan struct{}
	released sync.Once
}

// answer makes the device answer again, releasing the calls held.
func (m *hungModule) answer() {
	m.hung.Store(false)
	m.released.Do(func() { close(m.release) })
}

func (m *hungModule) wait() {
	if m.hung.Load() {
		<-m.release
	}
}

func (m *hungModule) Sign(h p11.SessionHandle, msg []byte) ([]byte, error) {
	m.wait()
	return m.module.Sign(h, msg)
}

func (m *hungModule) FindObjects(h p11.SessionHandle, max int) ([]p11.ObjectHandle, bool, error) {
	m.wait()
	return m.module.FindObjects(h, max)
}

// A device that stops answering: a call still honours its caller's
// deadline, the probe notices the hang (readiness goes red) and requests
// then fail fast; when the device answers again the backend is up.
func TestHungDeviceIsDownNotSilent(t *testing.T) {
	real := openTest(t)
	key := mustCreate(t, real, "hung", signer.ES256, 0)
	m := &hungModule{module: real.mod, release: make(chan struct{})}
	b := newBackend("hsm-hung", Config{Token: real.token, Sessions: 4, HealthInterval: 100 * time.Millisecond}, real.pin, real.lib, func() {})
	b.mod = m
	b.closeWait = 200 * time.Millisecond
	b.health.Start()
	defer func() { m.answer(); b.Close() }()
	sign := func(d time.Duration) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		start := time.Now()
		_, err := b.Sign(ctx, key.Ref, signer.ES256, randomInput(signer.ES256))
		return time.Since(start), err
	}
	if _, err := sign(time.Second); err != nil {
		t.Fatal(err)
	}
	m.hung.Store(true)
	took, err := sign(300 * time.Millisecond)
	wantKind(t, err, errs.DeadlineExceeded)
	if took > time.Second {
		t.Fatalf("a call into a hung device held its caller %v past a 300 ms deadline", took)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Health().Up {
		if time.Now().After(deadline) {
			t.Fatal("the health probe did not notice the device hangs")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h := b.Health(); !strings.Contains(h.Detail, "hangs") {
		t.Fatalf("down, but the detail does not say it hangs: %+v", h)
	}
	took, err = sign(5 * time.Second)
	wantKind(t, err, errs.Unavailable)
	if took > 100*time.Millisecond {
		t.Fatalf("a request waited %v on a backend known to hang", took)
	}
	m.answer()
	for deadline := time.Now().Add(15 * time.Second); !b.Health().Up; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not up after the device answered again: %+v", b.Health())
		}
	}
	if _, err := sign(time.Second); err != nil {
		t.Fatalf("after the device answered again: %v", err)
	}
}
