// Package raw is the raw signing purpose: a key of purpose raw signs a
// digest (or, for EdDSA, a message) the client sends, with no policy, and
// verifies signatures with any of its trusted generations. It rotates on
// demand. It serves sigil.v1.SigningService.
package raw

import (
	"google.golang.org/grpc"

	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/signer"
)

// Name is the purpose's name.
const Name = "raw"

// OpSign allows Sign; Verify needs only keys.read (it uses public keys).
const OpSign authz.Op = "sign.raw"

// Purpose is the raw purpose.
type Purpose struct{ keyring.NoPolicy }

var _ purpose.Purpose = Purpose{}

func init() { purpose.Register(Purpose{}) }

// Name implements keyring.Purpose.
func (Purpose) Name() string { return Name }

// CheckAlgorithm accepts every algorithm.
func (Purpose) CheckAlgorithm(signer.Algorithm) error { return nil }

// Rotation: a new generation signs at once.
func (Purpose) Rotation() keyring.Rotation { return keyring.RotateOnDemand }

// Operations implements purpose.Purpose.
func (Purpose) Operations() map[string]authz.Op {
	return map[string]authz.Op{
		sigilv1.SigningService_Sign_FullMethodName:      OpSign,
		sigilv1.SigningService_SignBatch_FullMethodName: OpSign,         // admitted on the namespace; each item decided as a Sign
		sigilv1.SigningService_Verify_FullMethodName:    authz.KeysRead, // public keys only
	}
}

var _ purpose.Batches = Purpose{}

// BatchMethods: SignBatch, whose items are each a Sign of their own.
func (Purpose) BatchMethods() []string {
	return []string{sigilv1.SigningService_SignBatch_FullMethodName}
}

// Payload is the digest or message to sign or verify.
func (Purpose) Payload(req any) []byte {
	switch r := req.(type) {
	case *sigilv1.SignRequest:
		return digestOrMessage(r.GetDigest(), r.GetMessage())
	case *sigilv1.VerifyRequest:
		return digestOrMessage(r.GetDigest(), r.GetMessage())
	}
	return nil
}

func digestOrMessage(digest, message []byte) []byte {
	if message != nil {
		return message
	}
	return digest
}

// RequestedPolicy: raw keys have none.
func (Purpose) RequestedPolicy(purpose.PolicyRequest) (any, error) { return nil, nil }

// Describe adds nothing.
func (Purpose) Describe(*keyring.Key, *sigilv1.Key) {}

// Service implements purpose.Purpose.
func (Purpose) Service(d purpose.Deps) (*grpc.ServiceDesc, any) {
	return &sigilv1.SigningService_ServiceDesc, &service{d: d}
}
