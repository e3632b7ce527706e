package pki

import (
	"context"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

// service implements sigil.v1.PKIService: it reads CA certificates only.
type service struct {
	sigilv1.UnimplementedPKIServiceServer
	d purpose.Deps
}

func (s *service) GetCACertificates(ctx context.Context, req *sigilv1.GetCACertificatesRequest) (*sigilv1.GetCACertificatesResponse, error) {
	certs, err := CA{Keys: s.d.Keys, Anchors: s.d.Anchors, Now: s.d.Now}.Bundle(ctx, req.GetKeyId())
	if err != nil {
		return nil, err
	}
	out := &sigilv1.GetCACertificatesResponse{Pem: string(PEM(certs...))}
	for _, c := range certs {
		out.Certificates = append(out.Certificates, c.Raw)
	}
	return out, nil
}
