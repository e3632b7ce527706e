package raw

import (
	"context"
	"crypto"
	"crypto/ecdsa"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/signer"
)

// service implements sigil.v1.SigningService: raw signatures with keys
// of purpose raw.
type service struct {
	sigilv1.UnimplementedSigningServiceServer
	d purpose.Deps
}

var _ sigilv1.SigningServiceServer = (*service)(nil)

// Sign signs a digest, or for EdDSA a message.
func (s *service) Sign(ctx context.Context, req *sigilv1.SignRequest) (*sigilv1.SignResponse, error) {
	sg, err := s.d.Keys.ForSigning(ctx, req.GetKeyId(), Name)
	if err != nil {
		return nil, err
	}
	if n := req.GetGeneration(); n < 0 {
		return nil, errs.New(errs.InvalidArgument, "generation: must be 1 or more")
	} else if n != 0 && int(n) != sg.Generation.Number {
		return nil, errs.New(errs.FailedPrecondition, "key %q: generation %d is not the active one (%d is)", sg.Key.ID, n, sg.Generation.Number)
	}
	alg := sg.Key.Algorithm
	input, err := signInput(alg, req.GetDigest(), req.GetMessage())
	if err != nil {
		return nil, err
	}
	var sig []byte
	if err := s.d.Sign(ctx, sg, func(ctx context.Context) (err error) { sig, err = sg.Sign(ctx, input); return err }); err != nil {
		return nil, err
	}
	if alg.IsECDSA() && req.GetFormat() != sigilv1.SignatureFormat_SIGNATURE_FORMAT_RAW {
		if sig, err = signer.RawToDER(sig); err != nil {
			return nil, err
		}
	}
	return &sigilv1.SignResponse{Signature: sig, Algorithm: string(alg), Generation: int32(sg.Generation.Number), Kid: sg.Generation.KID()}, nil
}

// SignBatch signs each item as Sign would, through the batch layer (each
// item its own call of Sign through the access path), and answers each
// item's signature or error in its place.
func (s *service) SignBatch(ctx context.Context, req *sigilv1.SignBatchRequest) (*sigilv1.SignBatchResponse, error) {
	resps, failed, err := purpose.Batch(ctx, s.d, sigilv1.SigningService_Sign_FullMethodName, req.GetItems(), func() *sigilv1.SignResponse { return &sigilv1.SignResponse{} })
	if err != nil {
		return nil, err
	}
	out := &sigilv1.SignBatchResponse{Results: make([]*sigilv1.SignBatchResult, len(resps))}
	for i, r := range resps {
		if failed[i] != nil {
			out.Results[i] = &sigilv1.SignBatchResult{Result: &sigilv1.SignBatchResult_Error{Error: failed[i]}}
			continue
		}
		out.Results[i] = &sigilv1.SignBatchResult{Result: &sigilv1.SignBatchResult_Response{Response: r}}
	}
	return out, nil
}

// signInput picks the request's digest, or for EdDSA its message, and
// checks its length.
func signInput(alg signer.Algorithm, digest, message []byte) ([]byte, error) {
	var input []byte
	switch {
	case alg == signer.EdDSA && message != nil:
		input = message
	case alg == signer.EdDSA:
		return nil, errs.New(errs.InvalidArgument, "EdDSA signs the message itself: send message, not digest")
	case digest != nil:
		input = digest
	default:
		return nil, errs.New(errs.InvalidArgument, "%s signs a %s digest: send digest", alg, alg.Hash())
	}
	return input, alg.CheckInput(input)
}

// maxSignatureBytes bounds a signature to verify: RSA-3072 is 384 bytes.
const maxSignatureBytes = 1024

// Verify checks a signature with the public key of a raw key's named
// generation, or of every trusted one. A signature that does not verify
// is the answer valid=false, not an error; one that cannot be decoded is
// InvalidArgument.
func (s *service) Verify(ctx context.Context, req *sigilv1.VerifyRequest) (*sigilv1.VerifyResponse, error) {
	k, err := s.d.Keys.Get(ctx, req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := k.CheckPurpose(Name); err != nil {
		return nil, err
	}
	input, err := signInput(k.Algorithm, req.GetDigest(), req.GetMessage())
	if err != nil {
		return nil, err
	}
	candidates, err := verifiers(k, req.GetGeneration(), req.GetKid())
	if err != nil {
		return nil, err
	}
	for _, g := range candidates {
		sig, err := contractSignature(k.Algorithm, g.Public(), req.GetSignature())
		if err != nil {
			return nil, err
		}
		if signer.Verify(g.Public(), k.Algorithm, input, sig) == nil {
			s.d.Served(ctx, g.Number)
			return &sigilv1.VerifyResponse{Valid: true, Generation: int32(g.Number), Kid: g.KID()}, nil
		}
	}
	return &sigilv1.VerifyResponse{}, nil
}

// verifiers are the generations a signature may verify with: the one
// named (if still trusted), or every trusted one.
func verifiers(k *keyring.Key, n int32, kid string) ([]*keyring.Generation, error) {
	if n != 0 || kid != "" {
		g, err := k.Find(int(n), kid)
		if err != nil || !g.Trusted() {
			return nil, err
		}
		return []*keyring.Generation{g}, nil
	}
	var out []*keyring.Generation
	for i := range k.Generations {
		if g := &k.Generations[i]; g.Trusted() {
			out = append(out, g)
		}
	}
	return out, nil
}

// contractSignature turns a signature as Sign returns it into the signer
// contract's encoding: ECDSA DER (or already r‖s) to r‖s.
func contractSignature(alg signer.Algorithm, pub crypto.PublicKey, sig []byte) ([]byte, error) {
	if len(sig) == 0 || len(sig) > maxSignatureBytes {
		return nil, errs.New(errs.InvalidArgument, "signature: 1 to %d bytes", maxSignatureBytes)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !alg.IsECDSA() || !ok {
		return sig, nil
	}
	size := signer.CurveSize(ec.Curve)
	if len(sig) == 2*size {
		return sig, nil
	}
	raw, err := signer.DERToRaw(sig, size)
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "signature: neither r‖s nor DER: %v", err)
	}
	return raw, nil
}
