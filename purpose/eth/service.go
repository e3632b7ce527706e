package eth

import (
	"context"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/sigil-hsm/sigil/internal/errs"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

// service implements sigil.v1.EthereumService with keys of purpose eth.
type service struct {
	sigilv1.UnimplementedEthereumServiceServer
	d   purpose.Deps
	eth *Signer
}

var _ sigilv1.EthereumServiceServer = (*service)(nil)

func (s *service) GetAddress(ctx context.Context, req *sigilv1.GetAddressRequest) (*sigilv1.GetAddressResponse, error) {
	k, err := s.d.Keys.Get(ctx, req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := k.CheckPurpose(Name); err != nil {
		return nil, err
	}
	return &sigilv1.GetAddressResponse{Address: Address(k)}, nil
}

func (s *service) SignTransaction(ctx context.Context, req *sigilv1.SignTransactionRequest) (*sigilv1.SignTransactionResponse, error) {
	sg, err := s.d.Keys.ForSigning(ctx, req.GetKeyId(), Name)
	if err != nil {
		return nil, err
	}
	u, err := unsignedOf(req)
	if err != nil {
		return nil, err
	}
	var out Signed
	err = s.d.Sign(ctx, sg, func() (err error) { out, err = s.eth.SignTx(ctx, sg, u); return err })
	if err != nil {
		return nil, err
	}
	return &sigilv1.SignTransactionResponse{RawTransaction: out.Raw, Hash: out.Hash.Hex(), From: out.From.Hex()}, nil
}

func (s *service) SignMessage(ctx context.Context, req *sigilv1.SignMessageRequest) (*sigilv1.SignMessageResponse, error) {
	sg, err := s.d.Keys.ForSigning(ctx, req.GetKeyId(), Name)
	if err != nil {
		return nil, err
	}
	var sig []byte
	err = s.d.Sign(ctx, sg, func() (err error) { sig, err = s.eth.SignMessage(ctx, sg, req.GetMessage()); return err })
	if err != nil {
		return nil, err
	}
	return &sigilv1.SignMessageResponse{Signature: sig, Address: Address(sg.Key)}, nil
}

func (s *service) SignTypedData(ctx context.Context, req *sigilv1.SignTypedDataRequest) (*sigilv1.SignTypedDataResponse, error) {
	sg, err := s.d.Keys.ForSigning(ctx, req.GetKeyId(), Name)
	if err != nil {
		return nil, err
	}
	var sig []byte
	var hash []byte
	err = s.d.Sign(ctx, sg, func() error {
		out, h, err := s.eth.SignTypedData(ctx, sg, req.GetTypedDataJson())
		sig, hash = out, h[:]
		return err
	})
	if err != nil {
		return nil, err
	}
	return &sigilv1.SignTypedDataResponse{Signature: sig, Hash: hexutil.Encode(hash), Address: Address(sg.Key)}, nil
}

// unsignedOf parses the transaction a request carries.
func unsignedOf(req *sigilv1.SignTransactionRequest) (Unsigned, error) {
	var u Unsigned
	var err error
	switch {
	case req.GetTransactionJson() != nil:
		u, err = ParseJSON(req.GetTransactionJson())
	case req.GetUnsignedRlp() != nil:
		u, err = ParseRLP(req.GetUnsignedRlp())
	default:
		err = errs.New(errs.InvalidArgument, "transaction: missing (send transaction_json or unsigned_rlp)")
	}
	if err != nil {
		return u, err
	}
	if id := req.GetChainId(); id != 0 && u.ChainID.Uint64() != id {
		return u, errs.New(errs.InvalidArgument, "chain_id %d does not match the transaction's chainId %s", id, u.ChainID)
	}
	return u, nil
}
