//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/secret"
	"github.com/sigil-hsm/sigil/signer"
)

// Type is the backend type name and the scheme of its references.
const Type = "pkcs11"

func init() { signer.Register(Type, signer.Decoding(Open)) }

// Config is a pkcs11 backend's section of the configuration file.
type Config struct {
	Module   string     `yaml:"module"`   // path of the PKCS#11 library
	Token    string     `yaml:"token"`    // token label; slot numbers change, labels do not
	PIN      secret.Ref `yaml:"pin"`      // env:NAME or file:PATH
	Sessions int        `yaml:"sessions"` // pool size; DefaultSessions if 0
	// HealthInterval is how often the token is probed;
	// signer.DefaultHealthInterval if 0.
	HealthInterval time.Duration `yaml:"health_interval"`
	// ExclusiveChanges makes generating, creating and destroying objects
	// exclusive of every object search in the process. SoftHSM needs it:
	// a search while another session generates a key pair was seen to fail
	// the generation (CKR_TEMPLATE_INCONSISTENT, or a public key that does
	// not parse). Unset, it is on for tokens whose manufacturer is SoftHSM
	// and off for others, so an HSM that does not need it pays nothing.
	ExclusiveChanges *bool `yaml:"exclusive_changes"`
}

// DefaultSessions is the session pool size when the configuration sets none.
const DefaultSessions = 8

// canaryLabel names the data object a backend keeps in its token so that
// its health probe proves the token still shows its objects: SoftHSM whose
// storage went away keeps its sessions open and simply finds nothing.
const canaryLabel = "sigil.health"

// Backend signs with keys in one token of a PKCS#11 module.
type Backend struct {
	name    string
	token   string
	pin     string
	lib     *library
	mod     module // lib.mod
	release func()
	pool    *pool
	health  *signer.Monitor

	mu       sync.Mutex
	slot     uint
	haveSlot bool
	loggedIn bool
	epoch    atomic.Uint64 // the library epoch the state above belongs to

	cache sync.Map // ref string -> *object

	// objects is held (written) while an object is generated, created or
	// destroyed and (read) while objects are searched, when exclusive is
	// set (Config.ExclusiveChanges). It is taken inside the call that uses
	// the module, so a call its caller gave up on keeps it until the module
	// returns. Signing with a cached handle never waits for it.
	objects   sync.RWMutex
	exclusive atomic.Bool
	forced    *bool // Config.ExclusiveChanges

	// life keeps the module loaded while calls are in flight: Close waits
	// for them, because a C call into a finalised, unloaded library
	// crashes the process.
	life struct {
		sync.Mutex
		closed   bool
		inflight sync.WaitGroup
		release  sync.Once
	}
	closeWait time.Duration
}

var (
	_ signer.Backend        = (*Backend)(nil)
	_ signer.KeyManager     = (*Backend)(nil)
	_ signer.PoolReporter   = (*Backend)(nil)
	_ signer.HealthReporter = (*Backend)(nil)
	_ signer.KeyLister      = (*Backend)(nil)
)

// Open loads the module, finds the token by label, logs in once, makes
// sure the token holds the health probe's object, and starts probing.
func Open(ctx context.Context, name string, cfg Config) (*Backend, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pin, err := cfg.PIN.Resolve("pin")
	if err != nil {
		return nil, err
	}
	unclaim, err := claim(name, cfg)
	if err != nil {
		return nil, err
	}
	lib, release, err := loadModule(cfg.Module)
	if err != nil {
		unclaim()
		return nil, err
	}
	b := newBackend(name, cfg, string(pin), lib, func() { release(); unclaim() })
	if err := b.ensureCanary(ctx); err != nil {
		b.Close()
		return nil, err
	}
	b.health.Start()
	return b, nil
}

// served is the tokens backends of this process serve, by module and
// label: two backends on one token would each take the other's keys for
// unrecorded ones and sweep them away.
var served = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

// claim reserves cfg's token for backend name; the returned func frees it.
func claim(name string, cfg Config) (func(), error) {
	key := cfg.Module + "\x00" + cfg.Token
	served.Lock()
	defer served.Unlock()
	if other, ok := served.m[key]; ok {
		return nil, errs.New(errs.InvalidArgument, "token %q of %s is already served by backend %q: give each token one backend", cfg.Token, cfg.Module, other)
	}
	served.m[key] = name
	var once sync.Once
	return func() {
		once.Do(func() {
			served.Lock()
			delete(served.m, key)
			served.Unlock()
		})
	}, nil
}

func (c Config) validate() error {
	switch {
	case c.Module == "":
		return errs.New(errs.InvalidArgument, "module: missing (path of the PKCS#11 library)")
	case c.Token == "":
		return errs.New(errs.InvalidArgument, "token: missing (the token label)")
	case c.Sessions < 0 || c.Sessions > 1024:
		return errs.New(errs.InvalidArgument, "sessions: %d out of range 1..1024", c.Sessions)
	case c.HealthInterval < 0 || c.HealthInterval > 0 && c.HealthInterval < 100*time.Millisecond:
		return errs.New(errs.InvalidArgument, "health_interval: %v is below 100ms", c.HealthInterval)
	}
	return c.PIN.Validate("pin")
}

func newBackend(name string, cfg Config, pin string, lib *library, release func()) *Backend {
	size := cfg.Sessions
	if size == 0 {
		size = DefaultSessions
	}
	b := &Backend{name: name, token: cfg.Token, pin: pin, lib: lib, mod: lib.mod, release: release, closeWait: defaultCloseWait, forced: cfg.ExclusiveChanges}
	if b.forced != nil {
		b.exclusive.Store(*b.forced)
	}
	b.epoch.Store(lib.epoch.Load())
	b.pool = newPool(size, b.openSession, func(h pkcs11.SessionHandle) { _ = b.mod.CloseSession(h) })
	b.health = signer.NewMonitor(name, cfg.HealthInterval, b.probe, b.recover)
	return b
}

// Close stops the health probe, refuses new requests, waits for those in
// flight, closes the pooled sessions and releases the module. If calls are
// still inside the module after closeWait (a hung network HSM), the module
// stays loaded, since unloading it under them would crash the process, and
// Close says so; a later Close tries again.
func (b *Backend) Close() error {
	b.health.Stop()
	b.life.Lock()
	b.life.closed = true
	b.life.Unlock()
	drained := make(chan struct{})
	go func() { b.life.inflight.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(b.closeWait):
		return errs.New(errs.Unavailable, "HSM backend %q: calls still inside the PKCS#11 module after %v; it stays loaded", b.name, b.closeWait)
	}
	b.life.release.Do(func() {
		b.pool.reset()
		b.release()
	})
	return nil
}

// defaultCloseWait is how long Close, and a re-initialisation, wait for
// calls in flight.
const defaultCloseWait = 10 * time.Second

// enter admits a call unless the backend is closed or its module is being
// re-initialised; the caller must call exit when it no longer uses the
// module.
func (b *Backend) enter(op string) error {
	b.life.Lock()
	defer b.life.Unlock()
	if b.life.closed {
		return errs.New(errs.Unavailable, "%s: HSM backend %q is closed", op, b.name)
	}
	if err := b.lib.enter(); err != nil {
		return err
	}
	b.life.inflight.Add(1)
	return nil
}

func (b *Backend) exit() {
	b.lib.exit()
	b.life.inflight.Done()
}

// PoolStats reports session pool usage.
func (b *Backend) PoolStats() signer.PoolStats { return b.pool.stats() }

// Health reports what the health probe last found.
func (b *Backend) Health() signer.Health { return b.health.Health() }

// probe proves the token still shows its objects: it finds the canary
// through a fresh search (no cached handle).
//
// While the token must not be searched (a key pair being generated, which
// takes seconds for RSA-3072 on a busy machine), the probe does not wait:
// the token answering C_GetTokenInfo proves it is there, and a slow
// generation is not an outage. A hung module hangs that call too.
func (b *Backend) probe(ctx context.Context) error {
	return do(ctx, b, "health probe", func(h pkcs11.SessionHandle) error {
		release, ok := b.trySearching()
		if !ok {
			return b.answers()
		}
		defer release()
		return b.showsObjects(h)
	})
}

// answers proves the token is present and the module answers for it.
func (b *Backend) answers() error {
	slot, err := b.findSlot()
	if err != nil {
		return err
	}
	_, err = b.mod.GetTokenInfo(slot)
	return err
}

// showsObjects proves the token still shows its objects by finding the
// canary.
func (b *Backend) showsObjects(h pkcs11.SessionHandle) error {
	objs, err := b.findCanary(h)
	if err == nil && len(objs) == 0 {
		err = errs.New(errs.Unavailable, "token %q no longer shows its objects", b.token)
	}
	return err
}

// recover re-initialises the module: after its storage went away and came
// back, a token shows its objects again only through a new C_Initialize.
// A token that is present again but lacks the probe's object (deleted by
// someone with the PIN) gets it back: its keys' absence, if they are gone
// too, is then reported for each key (ErrKeyMissing), not as an endless
// outage of the whole backend.
func (b *Backend) recover(ctx context.Context) error {
	if err := b.lib.reinit(b.closeWait); err != nil {
		return err
	}
	// Once per re-initialisation (the health monitor's recovery step):
	// the process's logger, which the server makes its JSON one.
	slog.Info("PKCS#11 module re-initialised", "backend", b.name, "token", b.token)
	return b.ensureCanary(ctx)
}

// ensureCanary creates the health probe's object unless the token has it.
func (b *Backend) ensureCanary(ctx context.Context) error {
	return do(ctx, b, "preparing the health probe", func(h pkcs11.SessionHandle) error {
		defer b.changing()()
		objs, err := b.findCanary(h)
		if err != nil || len(objs) > 0 {
			return err
		}
		_, err = b.mod.CreateObject(h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), // seen only when logged in
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, canaryLabel),
			pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, "sigil"),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, []byte("found by Sigil's health probe")),
		})
		return err
	})
}

func (b *Backend) findCanary(h pkcs11.SessionHandle) ([]pkcs11.ObjectHandle, error) {
	class := uint(pkcs11.CKO_DATA)
	return b.find(h, &class, URI{Object: canaryLabel}, 1)
}

// findSlot returns the slot holding the token, looking it up by label when
// it is not known (first use, or after the token went away).
func (b *Backend) findSlot() (uint, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.haveSlot {
		return b.slot, nil
	}
	slots, err := b.mod.GetSlotList(true)
	if err != nil {
		return 0, classify("listing slots", err)
	}
	var found []uint
	var manufacturer string
	for _, s := range slots {
		info, err := b.mod.GetTokenInfo(s)
		if err == nil && strings.TrimRight(info.Label, " \x00") == b.token {
			found = append(found, s)
			manufacturer = strings.TrimRight(info.ManufacturerID, " \x00")
		}
	}
	switch len(found) {
	case 0:
		return 0, errs.New(errs.Unavailable, "token %q not present", b.token)
	case 1:
		b.slot, b.haveSlot = found[0], true
		if b.forced == nil {
			b.exclusive.Store(needsExclusiveChanges(manufacturer))
		}
		return b.slot, nil
	}
	return 0, errs.New(errs.FailedPrecondition, "%d tokens are labelled %q; labels must be unique", len(found), b.token)
}

// openSession opens a read-write session on the token and makes sure the
// process is logged in to it (login is per token per process, not per
// session: once is enough until every session is gone).
func (b *Backend) openSession() (pkcs11.SessionHandle, error) {
	slot, err := b.findSlot()
	if err != nil {
		return 0, err
	}
	h, err := b.mod.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		b.forgetSlot()
		return 0, classify("opening an HSM session", err)
	}
	if err := b.login(h); err != nil {
		_ = b.mod.CloseSession(h)
		return 0, err
	}
	return h, nil
}

func (b *Backend) login(h pkcs11.SessionHandle) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.loggedIn {
		return nil
	}
	if err := b.mod.Login(h, pkcs11.CKU_USER, b.pin); err != nil && !isCKR(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		return classify("logging in to token "+b.token, err)
	}
	b.loggedIn = true
	return nil
}

// needsExclusiveChanges reports whether a token of this manufacturer must
// not be searched while it generates or destroys objects.
func needsExclusiveChanges(manufacturer string) bool {
	return strings.HasPrefix(manufacturer, "SoftHSM")
}

// searching holds off object changes while the caller searches the token,
// where the token needs that; the returned func ends the search.
func (b *Backend) searching() func() {
	if !b.exclusive.Load() {
		return func() {}
	}
	b.objects.RLock()
	return b.objects.RUnlock
}

// trySearching is searching without waiting: false while an object
// change holds the token.
func (b *Backend) trySearching() (func(), bool) {
	if !b.exclusive.Load() {
		return func() {}, true
	}
	if !b.objects.TryRLock() {
		return nil, false
	}
	return b.objects.RUnlock, true
}

// changing holds off searches and other changes while the caller
// generates, creates or destroys objects, where the token needs that.
func (b *Backend) changing() func() {
	if !b.exclusive.Load() {
		return func() {}
	}
	b.objects.Lock()
	return b.objects.Unlock
}

func (b *Backend) forgetSlot() {
	b.mu.Lock()
	b.haveSlot, b.loggedIn = false, false
	b.mu.Unlock()
}

// syncEpoch drops everything the backend knew of the module when the
// module was re-initialised since: sessions, login, slot and handles all
// died with C_Finalize. Idle sessions are forgotten, not closed, since
// their handle numbers may now belong to new sessions.
func (b *Backend) syncEpoch() {
	e := b.lib.epoch.Load()
	if b.epoch.Load() == e {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.epoch.Load() == e {
		return
	}
	b.haveSlot, b.loggedIn = false, false
	b.cache.Clear()
	b.pool.forget()
	b.epoch.Store(e)
}

// withSession runs a request's fn on a pooled, logged-in session (see
// call); while the health probe finds the backend down, it fails fast
// instead.
func withSession[T any](ctx context.Context, b *Backend, op string, fn func(pkcs11.SessionHandle) (T, error), undo func(T)) (T, error) {
	if err := b.health.Err(); err != nil {
		var zero T
		return zero, err
	}
	v, err := call(ctx, b, op, fn, undo)
	if errs.Is(err, errs.Unavailable) {
		b.health.Poke()
	}
	return v, err
}

// call runs fn (see sessionNow) in a goroutine of its own and waits for it
// while ctx allows: a call into the module cannot be interrupted, and a
// hung device must not hold the caller past its deadline.
//
// A call left behind goes on until the module returns, holding its session
// and the module (Close and re-initialisation wait for it) until then, but
// it never writes into its caller's state: its result travels only over a
// channel, and whether it is handed over or abandoned is decided by one
// compare-and-swap. An abandoned result that changed the token (a key pair
// generated for a caller who was told it failed) is given to undo, which
// rolls the change back.
func call[T any](ctx context.Context, b *Backend, op string, fn func(pkcs11.SessionHandle) (T, error), undo func(T)) (T, error) {
	type result struct {
		v   T
		err error
	}
	const waiting, handed, abandoned = 0, 1, 2
	var state atomic.Int32
	done := make(chan result, 1)
	go func() {
		v, err := sessionNow(ctx, b, op, fn)
		if state.CompareAndSwap(waiting, handed) {
			done <- result{v, err}
			return
		}
		if err == nil && undo != nil {
			undo(v)
		}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
	}
	select { // a call not inside the module sees ctx too, and says why it stopped
	case r := <-done:
		return r.v, r.err
	case <-time.After(ctxGrace):
	}
	if !state.CompareAndSwap(waiting, abandoned) {
		r := <-done // handed over a moment ago
		return r.v, r.err
	}
	b.health.Poke()
	var zero T
	return zero, errs.FromContext(ctx, op+": the HSM did not answer in time")
}

// ctxGrace is how long a call whose context ended gets to report that
// itself (a session checkout that timed out, say) before it is taken to
// be stuck in the module.
const ctxGrace = 20 * time.Millisecond

// sessionNow runs fn on a pooled, logged-in session. When fn fails with
// an error that means the session, login, object handles or token went
// stale, the stale state is dropped and fn runs once more.
func sessionNow[T any](ctx context.Context, b *Backend, op string, fn func(pkcs11.SessionHandle) (T, error)) (T, error) {
	var zero T
	if err := b.enter(op); err != nil {
		return zero, err
	}
	defer b.exit()
	b.syncEpoch()
	span := trace.SpanFromContext(ctx)
	for attempt := 0; ; attempt++ {
		waited := time.Now()
		s, err := b.pool.get(ctx)
		if err != nil {
			return zero, err
		}
		// The session pool's wait, and the module's own time after it, on
		// the caller's span (the backend call's): a slow signature tells
		// a saturated pool from a slow HSM.
		recording := span.IsRecording()
		if recording {
			span.AddEvent("pkcs11.session", trace.WithAttributes(attribute.String("pkcs11.op", op), attribute.Int64("wait_us", time.Since(waited).Microseconds())))
		}
		v, err := fn(s.h)
		if recording {
			span.AddEvent("pkcs11.done", trace.WithAttributes(attribute.String("pkcs11.op", op)))
		}
		rec := recoveryFor(err)
		switch rec {
		case keep:
			b.pool.put(s)
			return v, classify(op, err)
		case handle:
			b.pool.put(s)
			b.cache.Clear()
		case session:
			// Losing the sessions loses the login, and SoftHSM drops the
			// handles of private objects with it.
			b.mu.Lock()
			b.loggedIn = false
			b.mu.Unlock()
			b.cache.Clear()
			b.pool.discard(s)
		case token:
			b.forgetSlot()
			b.cache.Clear()
			b.pool.discard(s)
		}
		if attempt > 0 || ctx.Err() != nil {
			return zero, classify(op, err)
		}
	}
}

// do is call for work with no result (the health probe's).
func do(ctx context.Context, b *Backend, op string, fn func(pkcs11.SessionHandle) error) error {
	_, err := call(ctx, b, op, func(h pkcs11.SessionHandle) (struct{}, error) { return struct{}{}, fn(h) }, nil)
	return err
}

// object is what the backend caches about a key: its private key handle
// and its public key.
type object struct {
	priv pkcs11.ObjectHandle
	pub  crypto.PublicKey
}
