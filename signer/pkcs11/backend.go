package pkcs11

import (
	"context"
	"crypto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"

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
}

// DefaultSessions is the session pool size when the configuration sets none.
const DefaultSessions = 8

// downFor is how long requests fail fast after the token could not be
// reached, before the next request tries it again.
const downFor = 500 * time.Millisecond

// Backend signs with keys in one token of a PKCS#11 module.
type Backend struct {
	name    string
	token   string
	pin     string
	mod     module
	release func()
	pool    *pool

	mu       sync.Mutex
	slot     uint
	haveSlot bool
	loggedIn bool

	downUntil atomic.Int64 // unix nanos; requests before it fail fast
	now       func() time.Time

	cache sync.Map // ref string -> *object

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
	_ signer.Backend       = (*Backend)(nil)
	_ signer.KeyManager    = (*Backend)(nil)
	_ signer.PoolReporter  = (*Backend)(nil)
	_ signer.HealthChecker = (*Backend)(nil)
)

// Open loads the module, finds the token by label, logs in once and checks
// that a session can be opened.
func Open(ctx context.Context, name string, cfg Config) (*Backend, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pin, err := cfg.PIN.Resolve("pin")
	if err != nil {
		return nil, err
	}
	mod, release, err := loadModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	b := newBackend(name, cfg, string(pin), mod, release)
	if err := b.Healthy(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (c Config) validate() error {
	switch {
	case c.Module == "":
		return errs.New(errs.InvalidArgument, "module: missing (path of the PKCS#11 library)")
	case c.Token == "":
		return errs.New(errs.InvalidArgument, "token: missing (the token label)")
	case c.Sessions < 0 || c.Sessions > 1024:
		return errs.New(errs.InvalidArgument, "sessions: %d out of range 1..1024", c.Sessions)
	}
	return c.PIN.Validate("pin")
}

func newBackend(name string, cfg Config, pin string, mod module, release func()) *Backend {
	size := cfg.Sessions
	if size == 0 {
		size = DefaultSessions
	}
	b := &Backend{name: name, token: cfg.Token, pin: pin, mod: mod, release: release, now: time.Now, closeWait: defaultCloseWait}
	b.pool = newPool(size, b.openSession, func(h pkcs11.SessionHandle) { _ = mod.CloseSession(h) })
	return b
}

// Close refuses new requests, waits for those in flight, closes the
// pooled sessions and releases the module. If calls are still inside the
// module after closeWait (a hung network HSM), the module stays loaded,
// since unloading it under them would crash the process, and Close says
// so; a later Close tries again.
func (b *Backend) Close() error {
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

// defaultCloseWait is how long Close waits for calls in flight.
const defaultCloseWait = 10 * time.Second

// enter admits a call unless the backend is closed; the caller must call
// b.life.inflight.Done when it no longer uses the module.
func (b *Backend) enter(op string) error {
	b.life.Lock()
	defer b.life.Unlock()
	if b.life.closed {
		return errs.New(errs.Unavailable, "%s: HSM backend %q is closed", op, b.name)
	}
	b.life.inflight.Add(1)
	return nil
}

// PoolStats reports session pool usage.
func (b *Backend) PoolStats() signer.PoolStats { return b.pool.stats() }

// Healthy reports whether a logged-in session can be had now.
func (b *Backend) Healthy(ctx context.Context) error {
	return b.withSession(ctx, "health check", func(pkcs11.SessionHandle) error { return nil })
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
	for _, s := range slots {
		info, err := b.mod.GetTokenInfo(s)
		if err == nil && strings.TrimRight(info.Label, " \x00") == b.token {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return 0, errs.New(errs.Unavailable, "token %q not present", b.token)
	case 1:
		b.slot, b.haveSlot = found[0], true
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
		b.markDown()
		return 0, err
	}
	h, err := b.mod.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		b.forgetSlot()
		b.markDown()
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

func (b *Backend) forgetSlot() {
	b.mu.Lock()
	b.haveSlot, b.loggedIn = false, false
	b.mu.Unlock()
}

func (b *Backend) markDown() { b.downUntil.Store(b.now().Add(downFor).UnixNano()) }

// withSession runs fn on a pooled, logged-in session. When fn fails with an
// error that means the session, login, object handles or token went stale,
// the stale state is dropped and fn runs once more.
func (b *Backend) withSession(ctx context.Context, op string, fn func(pkcs11.SessionHandle) error) error {
	if err := b.enter(op); err != nil {
		return err
	}
	defer b.life.inflight.Done()
	for attempt := 0; ; attempt++ {
		if b.now().UnixNano() < b.downUntil.Load() {
			return errs.New(errs.Unavailable, "%s: token %q unreachable, retrying shortly", op, b.token)
		}
		s, err := b.pool.get(ctx)
		if err != nil {
			return err
		}
		err = fn(s.h)
		rec := recoveryFor(err)
		switch rec {
		case keep:
			b.pool.put(s)
			return classify(op, err)
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
			return classify(op, err)
		}
	}
}

// object is what the backend caches about a key: its private key handle
// and its public key.
type object struct {
	priv pkcs11.ObjectHandle
	pub  crypto.PublicKey
}
