package server

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

// keyService implements sigil.v1.KeyService over the keyring.
type keyService struct {
	sigilv1.UnimplementedKeyServiceServer
	keys *keyring.Keyring
}

var _ sigilv1.KeyServiceServer = (*keyService)(nil)

func (s *keyService) CreateKey(ctx context.Context, req *sigilv1.CreateKeyRequest) (*sigilv1.CreateKeyResponse, error) {
	purpose := req.GetPurpose()
	if purpose == "" {
		purpose = string(keyring.PurposeRaw)
	}
	k, err := s.keys.Create(ctx, keyring.CreateSpec{
		ID: req.GetId(), Purpose: keyring.Purpose(purpose), Algorithm: signer.Algorithm(req.GetAlgorithm()),
		RSABits: int(req.GetRsaBits()), Backend: req.GetBackend(),
	})
	if err != nil {
		return nil, err
	}
	pk, err := keyToProto(k)
	return &sigilv1.CreateKeyResponse{Key: pk}, err
}

func (s *keyService) GetKey(ctx context.Context, req *sigilv1.GetKeyRequest) (*sigilv1.GetKeyResponse, error) {
	k, err := s.keys.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	pk, err := keyToProto(k)
	return &sigilv1.GetKeyResponse{Key: pk}, err
}

func (s *keyService) ListKeys(ctx context.Context, _ *sigilv1.ListKeysRequest) (*sigilv1.ListKeysResponse, error) {
	resp := &sigilv1.ListKeysResponse{}
	for _, k := range s.keys.List(ctx) {
		pk, err := keyToProto(k)
		if err != nil {
			return nil, err
		}
		resp.Keys = append(resp.Keys, pk)
	}
	return resp, nil
}

func (s *keyService) GetPublicKey(ctx context.Context, req *sigilv1.GetPublicKeyRequest) (*sigilv1.GetPublicKeyResponse, error) {
	k, err := s.keys.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	g, ok := k.Active()
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "key %q has no active generation", k.ID)
	}
	pem, err := signer.PublicKeyPEM(g.Public())
	if err != nil {
		return nil, err
	}
	return &sigilv1.GetPublicKeyResponse{Generation: int32(g.Number), Kid: g.KID(), PublicKeyPem: pem, PublicKeyDer: g.PublicKey}, nil
}

func keyToProto(k *keyring.Key) (*sigilv1.Key, error) {
	pk := &sigilv1.Key{
		Id: k.ID, Algorithm: string(k.Algorithm), Purpose: string(k.Purpose), Backend: k.Backend,
		RsaBits: int32(k.RSABits), CreateTime: timestamppb.New(k.CreatedAt),
	}
	for i := range k.Generations {
		g := &k.Generations[i]
		if g.State == keyring.StateCreating {
			continue
		}
		pg := &sigilv1.Generation{Generation: int32(g.Number), State: string(g.State), Kid: g.KID(), BackendRef: g.Ref, CreateTime: timestamppb.New(g.CreatedAt)}
		if g.Public() != nil {
			pem, err := signer.PublicKeyPEM(g.Public())
			if err != nil {
				return nil, err
			}
			pg.PublicKeyPem = pem
		}
		pk.Generations = append(pk.Generations, pg)
	}
	return pk, nil
}
