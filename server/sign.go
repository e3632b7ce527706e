package server

import (
	"context"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

// signingService implements sigil.v1.SigningService: raw signatures with
// keys of purpose raw.
type signingService struct {
	sigilv1.UnimplementedSigningServiceServer
	keys    *keyring.Keyring
	metrics *metrics
}

var _ sigilv1.SigningServiceServer = (*signingService)(nil)

func (s *signingService) Sign(ctx context.Context, req *sigilv1.SignRequest) (*sigilv1.SignResponse, error) {
	sg, err := s.keys.ForSigning(ctx, req.GetKeyId(), keyring.PurposeRaw)
	if err != nil {
		return nil, err
	}
	alg := sg.Key.Algorithm
	input, err := signInput(alg, req)
	if err != nil {
		return nil, err
	}
	noteGeneration(ctx, sg.Generation.Number)
	start := time.Now()
	sig, err := sg.Sign(ctx, input)
	s.metrics.observeSign(sg.Key.ID, alg, sg.Key.Backend, err, time.Since(start))
	if err != nil {
		return nil, err
	}
	if alg.IsECDSA() && req.GetFormat() != sigilv1.SignatureFormat_SIGNATURE_FORMAT_RAW {
		if sig, err = signer.RawToDER(sig); err != nil {
			return nil, err
		}
	}
	return &sigilv1.SignResponse{Signature: sig, Algorithm: string(alg), Generation: int32(sg.Generation.Number), Kid: sg.Generation.KID()}, nil
}

// signInput picks the request's digest, or for EdDSA its message, and
// checks its length.
func signInput(alg signer.Algorithm, req *sigilv1.SignRequest) ([]byte, error) {
	var input []byte
	switch {
	case alg == signer.EdDSA && req.GetMessage() != nil:
		input = req.GetMessage()
	case alg == signer.EdDSA:
		return nil, errs.New(errs.InvalidArgument, "EdDSA signs the message itself: send message, not digest")
	case req.GetDigest() != nil:
		input = req.GetDigest()
	default:
		return nil, errs.New(errs.InvalidArgument, "%s signs a %s digest: send digest", alg, alg.Hash())
	}
	return input, alg.CheckInput(input)
}
