package server

import (
	"context"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/ethsign"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

// ethService implements sigil.v1.EthereumService with keys of purpose eth.
type ethService struct {
	sigilv1.UnimplementedEthereumServiceServer
	keys    *keyring.Keyring
	eth     *ethsign.Service
	metrics *metrics
}

var _ sigilv1.EthereumServiceServer = (*ethService)(nil)

func (s *ethService) GetAddress(ctx context.Context, req *sigilv1.GetAddressRequest) (*sigilv1.GetAddressResponse, error) {
	k, err := s.keys.Get(ctx, req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if k.Purpose != keyring.PurposeEth {
		return nil, errs.New(errs.FailedPrecondition, "key %q has purpose %s, not eth", k.ID, k.Purpose)
	}
	return &sigilv1.GetAddressResponse{Address: k.Address}, nil
}

func (s *ethService) SignTransaction(ctx context.Context, req *sigilv1.SignTransactionRequest) (*sigilv1.SignTransactionResponse, error) {
	sg, err := s.keys.ForSigning(ctx, req.GetKeyId(), keyring.PurposeEth)
	if err != nil {
		return nil, err
	}
	var u ethsign.Unsigned
	switch {
	case req.GetTransactionJson() != nil:
		u, err = ethsign.ParseJSON(req.GetTransactionJson())
	case req.GetUnsignedRlp() != nil:
		u, err = ethsign.ParseRLP(req.GetUnsignedRlp())
	default:
		err = errs.New(errs.InvalidArgument, "transaction: missing (send transaction_json or unsigned_rlp)")
	}
	if err != nil {
		return nil, err
	}
	if id := req.GetChainId(); id != 0 && u.ChainID.Uint64() != id {
		return nil, errs.New(errs.InvalidArgument, "chain_id %d does not match the transaction's chainId %s", id, u.ChainID)
	}
	var out ethsign.Signed
	err = s.observe(ctx, sg, func() (err error) { out, err = s.eth.SignTx(ctx, sg, u); return err })
	if err != nil {
		return nil, err
	}
	return &sigilv1.SignTransactionResponse{RawTransaction: out.Raw, Hash: out.Hash.Hex(), From: out.From.Hex()}, nil
}

func (s *ethService) SignMessage(ctx context.Context, req *sigilv1.SignMessageRequest) (*sigilv1.SignMessageResponse, error) {
	sg, err := s.keys.ForSigning(ctx, req.GetKeyId(), keyring.PurposeEth)
	if err != nil {
		return nil, err
	}
	var sig []byte
	err = s.observe(ctx, sg, func() (err error) { sig, err = s.eth.SignMessage(ctx, sg, req.GetMessage()); return err })
	if err != nil {
		return nil, err
	}
	return &sigilv1.SignMessageResponse{Signature: sig, Address: sg.Key.Address}, nil
}

func (s *ethService) SignTypedData(ctx context.Context, req *sigilv1.SignTypedDataRequest) (*sigilv1.SignTypedDataResponse, error) {
	sg, err := s.keys.ForSigning(ctx, req.GetKeyId(), keyring.PurposeEth)
	if err != nil {
		return nil, err
	}
	var sig []byte
	var hash []byte
	err = s.observe(ctx, sg, func() error {
		out, h, err := s.eth.SignTypedData(ctx, sg, req.GetTypedDataJson())
		sig, hash = out, h[:]
		return err
	})
	if err != nil {
		return nil, err
	}
	return &sigilv1.SignTypedDataResponse{Signature: sig, Hash: hexutil.Encode(hash), Address: sg.Key.Address}, nil
}

// observe runs a signing call and records it in the metrics.
func (s *ethService) observe(ctx context.Context, sg keyring.Signing, call func() error) error {
	noteGeneration(ctx, sg.Generation.Number)
	start := time.Now()
	err := call()
	s.metrics.observeSign(sg.Key.ID, signer.ES256K, sg.Key.Backend, err, time.Since(start))
	return err
}
