package pkcs11

import (
	"errors"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// module is the part of *pkcs11.Ctx the backend uses. Tests wrap it to
// inject faults that a real SoftHSM cannot be made to produce on demand.
type module interface {
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
	DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error
}

var _ module = (*pkcs11.Ctx)(nil)

// A PKCS#11 library is initialised once per process (a second C_Initialize
// fails, and C_Finalize ends every user's sessions), so loaded modules are
// shared and reference-counted across backends.
var loaded = struct {
	sync.Mutex
	m map[string]*sharedModule
}{m: map[string]*sharedModule{}}

type sharedModule struct {
	ctx  *pkcs11.Ctx
	refs int
}

// loadModule loads and initialises the library at path, or shares the one
// already loaded. release must be called once when the caller is done.
func loadModule(path string) (*pkcs11.Ctx, func(), error) {
	loaded.Lock()
	defer loaded.Unlock()
	sm, ok := loaded.m[path]
	if !ok {
		ctx := pkcs11.New(path)
		if ctx == nil {
			return nil, nil, errs.New(errs.FailedPrecondition, "cannot load PKCS#11 module %s", path)
		}
		if err := ctx.Initialize(); err != nil && !isCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			ctx.Destroy()
			return nil, nil, errs.New(errs.Unavailable, "initialising PKCS#11 module %s: %w", path, err)
		}
		sm = &sharedModule{ctx: ctx}
		loaded.m[path] = sm
	}
	sm.refs++
	var once sync.Once
	return sm.ctx, func() { once.Do(func() { releaseModule(path) }) }, nil
}

func releaseModule(path string) {
	loaded.Lock()
	defer loaded.Unlock()
	sm := loaded.m[path]
	sm.refs--
	if sm.refs == 0 {
		_ = sm.ctx.Finalize()
		sm.ctx.Destroy()
		delete(loaded.m, path)
	}
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
		pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_TOKEN_NOT_RECOGNIZED:
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
		pkcs11.CKR_SESSION_COUNT, pkcs11.CKR_FUNCTION_FAILED:
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
