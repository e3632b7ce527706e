//go:build !cgo

package pkcs11

import (
	"context"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// Type is the backend type name and the scheme of its references.
const Type = "pkcs11"

// Without cgo there is no way to load a PKCS#11 module: the type is still
// registered, so a configuration naming it fails at start with a reason
// instead of as an unknown backend type, and the rest of Sigil (KMS
// backends, the client commands) builds and runs.
func init() {
	signer.Register(Type, func(context.Context, string, func(any) error) (signer.Backend, error) {
		return nil, errNoCgo
	})
}

var errNoCgo = errs.New(errs.FailedPrecondition, "this sigil was built without cgo (CGO_ENABLED=0), which the pkcs11 backend needs to load a PKCS#11 module; build it with CGO_ENABLED=1")

// InitToken needs cgo, as the backend does.
func InitToken(module, label string, soPIN, userPIN []byte) (uint, error) { return 0, errNoCgo }

// Check needs cgo, as the backend does.
func Check(context.Context, func(any) error) (Token, []Capability, error) {
	return Token{}, nil, errNoCgo
}
