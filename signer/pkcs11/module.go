//go:build cgo

package pkcs11

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// module is the part of *pkcs11.Ctx the backend uses. Tests wrap it to
// inject faults that a real SoftHSM cannot be made to produce on demand.
type module interface {
	Initialize(opts ...pkcs11.InitializeOption) error
	Finalize() error
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error)
	OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error)
	CloseSession(sh pkcs11.SessionHandle) error
	Login(sh pkcs11.SessionHandle, userType uint, pin string) error
	FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error
	FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error)
	FindObjectsFinal(sh pkcs11.SessionHandle) error
	GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error)
	SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
	GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error)
	CreateObject(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error
	UnwrapKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, unwrappingkey pkcs11.ObjectHandle, wrappedkey []byte, a []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
}

var _ module = (*pkcs11.Ctx)(nil)

// library is a loaded PKCS#11 module, shared by every backend of the
// process that uses it: a library is initialised once per process (a
// second C_Initialize fails, and C_Finalize ends every user's sessions).
//
// It can be re-initialised (C_Finalize, C_Initialize), the only way some
// modules, SoftHSM among them, see a token again after its storage went
// away and came back. Calls pass a gate for that: reinit shuts it, waits
// for the calls inside to leave, and bumps the epoch, which tells every
// backend that its sessions, login and object handles are gone.
type library struct {
	mod  module
	path string
	refs int // guarded by loaded

	mu      sync.Mutex
	inside  int           // calls in the module now
	shut    bool          // a reinit is under way: calls are refused
	drained chan struct{} // closed when inside reaches 0 while shut
	epoch   atomic.Uint64
	destroy func() // unloads the library (dlclose)
}

var loaded = struct {
	sync.Mutex
	m map[string]*library
}{m: map[string]*library{}}

// initModule loads the library at path and initialises it.
func initModule(path string) (*pkcs11.Ctx, error) {
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, errs.New(errs.FailedPrecondition, "cannot load PKCS#11 module %s", path)
	}
	if err := ctx.Initialize(); err != nil && !isCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, errs.New(errs.Unavailable, "initialising PKCS#11 module %s: %w", path, err)
	}
	return ctx, nil
}

// loadModule loads and initialises the library at path, or shares the one
// already loaded. release must be called once when the caller is done.
func loadModule(path string) (*library, func(), error) {
	loaded.Lock()
	defer loaded.Unlock()
	lib, ok := loaded.m[path]
	if !ok {
		ctx, err := initModule(path)
		if err != nil {
			return nil, nil, err
		}
		lib = &library{mod: ctx, path: path, destroy: ctx.Destroy}
		loaded.m[path] = lib
	}
	lib.refs++
	var once sync.Once
	return lib, func() { once.Do(func() { releaseModule(path) }) }, nil
}

func releaseModule(path string) {
	loaded.Lock()
	defer loaded.Unlock()
	lib := loaded.m[path]
	lib.refs--
	if lib.refs == 0 {
		_ = lib.mod.Finalize()
		lib.destroy()
		delete(loaded.m, path)
	}
}

// enter admits a call into the module unless a reinit is under way; the
// caller must call exit when it no longer uses the module.
func (l *library) enter() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return errs.New(errs.Unavailable, "PKCS#11 module %s is being re-initialised", l.path)
	}
	l.inside++
	return nil
}

func (l *library) exit() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inside--
	if l.shut && l.inside == 0 {
		close(l.drained)
	}
}

// reinit finalises and initialises the module again once the calls inside
// it have left, waiting at most wait for them (a call stuck in a hung
// device must not be pulled from under: finalising under it can crash the
// process). Every backend on the module finds a new epoch afterwards.
func (l *library) reinit(wait time.Duration) error {
	l.mu.Lock()
	if l.shut {
		l.mu.Unlock()
		return errs.New(errs.Unavailable, "PKCS#11 module %s: a re-initialisation is already under way", l.path)
	}
	l.shut, l.drained = true, make(chan struct{})
	if l.inside == 0 {
		close(l.drained)
	}
	drained := l.drained
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.shut = false
		l.mu.Unlock()
	}()
	select {
	case <-drained:
	case <-time.After(wait):
		return errs.New(errs.Unavailable, "PKCS#11 module %s: calls still inside after %v; not re-initialised", l.path, wait)
	}
	_ = l.mod.Finalize() // fails harmlessly if a previous Initialize failed
	l.epoch.Add(1)
	if err := l.mod.Initialize(); err != nil && !isCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return errs.New(errs.Unavailable, "re-initialising PKCS#11 module %s: %w", l.path, err)
	}
	return nil
}

// isCKR reports whether err is the PKCS#11 return value rv.
func isCKR(err error, rv uint) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// recovery says what a PKCS#11 error makes stale.
type recovery int

const (
	keep    recovery = iota // nothing: the error is the answer
	session                 // the session (and, with it, maybe all sessions and the login)
	handle                  // cached object handles
	token                   // the token itself: its slot must be found again
)

func recoveryFor(err error) recovery {
	var e pkcs11.Error
	if !errors.As(err, &e) {
		return keep
	}
	switch uint(e) {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_USER_NOT_LOGGED_IN:
		return session
	case pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID:
		return handle
	case pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return token
	}
	return keep
}

// classify turns a PKCS#11 error into a typed error with op as context.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var typed *errs.Error
	if errors.As(err, &typed) {
		return err
	}
	var e pkcs11.Error
	if !errors.As(err, &e) {
		return errs.Wrap(errs.Internal, err, op)
	}
	switch uint(e) {
	case pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SESSION_HANDLE_INVALID,
		pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_DEVICE_MEMORY,
		pkcs11.CKR_SESSION_COUNT, pkcs11.CKR_FUNCTION_FAILED, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_GENERAL_ERROR:
		return errs.Wrap(errs.Unavailable, err, op+": HSM unavailable")
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED, pkcs11.CKR_PIN_LEN_RANGE:
		return errs.Wrap(errs.FailedPrecondition, err, op+": HSM login refused (check the configured PIN source)")
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED,
		pkcs11.CKR_DOMAIN_PARAMS_INVALID, pkcs11.CKR_CURVE_NOT_SUPPORTED, pkcs11.CKR_TEMPLATE_INCONSISTENT:
		return errs.Wrap(errs.FailedPrecondition, err, op+": the token refuses this key or mechanism")
	case pkcs11.CKR_DATA_LEN_RANGE, pkcs11.CKR_DATA_INVALID:
		return errs.Wrap(errs.InvalidArgument, err, op)
	}
	return errs.Wrap(errs.Internal, err, op)
}
