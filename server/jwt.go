package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/jwtsign"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// jwtService implements sigil.v1.JWTService with keys of purpose jwt.
type jwtService struct {
	sigilv1.UnimplementedJWTServiceServer
	keys    *keyring.Keyring
	metrics *metrics
	now     func() time.Time
}

var _ sigilv1.JWTServiceServer = (*jwtService)(nil)

func (s *jwtService) SignJWT(ctx context.Context, req *sigilv1.SignJWTRequest) (*sigilv1.SignJWTResponse, error) {
	sg, err := s.keys.ForSigning(ctx, req.GetKeyId(), keyring.PurposeJWT)
	if err != nil {
		return nil, err
	}
	p, err := jwtsign.Prepare(jwtsign.Request{Claims: req.GetClaimsJson(), Headers: req.GetHeadersJson(), TTL: req.GetTtl().AsDuration()}, *sg.Key.JWT, s.now())
	if err != nil {
		return nil, err
	}
	noteGeneration(ctx, sg.Generation.Number)
	start := time.Now()
	tok, err := jwtsign.Sign(ctx, sg, p)
	s.metrics.observeSign(sg.Key.ID, sg.Key.Algorithm, sg.Key.Backend, err, time.Since(start))
	if err != nil {
		return nil, err
	}
	return &sigilv1.SignJWTResponse{Token: tok.Compact, Kid: tok.KID, Generation: int32(tok.Generation),
		IssueTime: timestamppb.New(tok.IssuedAt), ExpireTime: timestamppb.New(tok.Expiry)}, nil
}
