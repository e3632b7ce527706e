package pki

import (
	"google.golang.org/grpc"

	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/signer"
)

// Name is the purpose's name.
const Name = "pki"

// Purpose is the CA purpose.
type Purpose struct{ keyring.NoPolicy }

var _ purpose.Purpose = Purpose{}

func init() { purpose.Register(Purpose{}) }

// Name implements keyring.Purpose.
func (Purpose) Name() string { return Name }

// CheckAlgorithm accepts what X.509 verifiers take: ECDSA P-256 and P-384,
// RSA and Ed25519; secp256k1 is no X.509 curve.
func (Purpose) CheckAlgorithm(a signer.Algorithm) error {
	if a == signer.ES256K {
		return errs.New(errs.InvalidArgument, "a pki key cannot be ES256K: X.509 verifiers do not take secp256k1 (ES256 is the usual choice)")
	}
	return nil
}

// Rotation: a new generation signs at once (and gets its certificate).
func (Purpose) Rotation() keyring.Rotation { return keyring.RotateOnDemand }

// Operations implements purpose.Purpose: the CA certificates are public.
func (Purpose) Operations() map[string]authz.Op {
	return map[string]authz.Op{sigilv1.PKIService_GetCACertificates_FullMethodName: authz.KeysRead}
}

// Payload: the service signs nothing.
func (Purpose) Payload(any) []byte { return nil }

// RequestedPolicy: pki keys have none.
func (Purpose) RequestedPolicy(purpose.PolicyRequest) (any, error) { return nil, nil }

// Describe adds nothing.
func (Purpose) Describe(*keyring.Key, *sigilv1.Key) {}

// Service implements purpose.Purpose.
func (Purpose) Service(d purpose.Deps) (*grpc.ServiceDesc, any) {
	return &sigilv1.PKIService_ServiceDesc, &service{d: d}
}
