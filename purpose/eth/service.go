package eth

import (
	"context"
	"errors"
	"strconv"
	"strings"

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
	node := settingsOf(s.d).Upstream
	if req.GetSubmit() && node == nil {
		return nil, errs.New(errs.FailedPrecondition, "submit: this server has no execution client behind it (ethrpc.upstream)")
	}
	sg, err := s.d.Keys.ForSigning(ctx, req.GetKeyId(), Name)
	if err != nil {
		return nil, err
	}
	u, err := unsignedOf(req)
	if err != nil {
		return nil, err
	}
	var out Signed
	err = s.d.Sign(ctx, sg, func(ctx context.Context) (err error) { out, err = s.eth.SignTx(ctx, sg, u); return err })
	if err != nil {
		return nil, err
	}
	// The audit record says which nonce of which chain this is: what a
	// restore's reconciliation reads back.
	s.d.Note(ctx, "chain", u.ChainID.String())
	s.d.Note(ctx, "nonce", strconv.FormatUint(u.Tx.Nonce(), 10))
	s.d.Note(ctx, "tx_hash", out.Hash.Hex())
	// With submit, the transaction goes to the node in Committed, once
	// the signature's audit record is written: what is broadcast cannot
	// be withheld, so it must be on the record first.
	return &sigilv1.SignTransactionResponse{RawTransaction: out.Raw, Hash: out.Hash.Hex(), From: out.From.Hex()}, nil
}

var (
	_ purpose.Committer = Purpose{}
	_ purpose.Fenced    = Purpose{}
)

// Reconcile names what lifts a restored key's fence.
func (Purpose) Reconcile(id string) string { return "sigil eth reconcile --key " + id }

// Committed submits a transaction signed with submit set, and says what
// the node answered (written as a second audit record of the request).
func (Purpose) Committed(ctx context.Context, d purpose.Deps, _ string, req, resp any) string {
	r, ok := req.(*sigilv1.SignTransactionRequest)
	out, signed := resp.(*sigilv1.SignTransactionResponse)
	node := settingsOf(d).Upstream
	if !ok || !signed || !r.GetSubmit() || node == nil {
		return ""
	}
	// The caller going away does not take the submission with it: the
	// transaction is signed and recorded, and a submission cut short would
	// leave its nonce a hole only the caller's bytes could fill.
	answered := submit(context.WithoutCancel(ctx), node, out)
	switch {
	case out.GetSubmitted():
		return "submitted to the node: " + out.GetHash()
	case !answered:
		return "signed; the node did not answer, so whether it has it is unknown: " + out.GetSubmitError()
	}
	return "signed, and the node refused it: " + out.GetSubmitError()
}

// submit sends a signed transaction to the node and notes in resp what
// the node said; it reports whether the node answered at all. A node that
// knew it already took it before (a retry of the same request resubmits
// the same bytes).
func submit(ctx context.Context, node *Upstream, resp *sigilv1.SignTransactionResponse) bool {
	var hash string
	err := node.Call(ctx, &hash, "eth_sendRawTransaction", hexutil.Bytes(resp.GetRawTransaction()))
	var ne *NodeError
	switch {
	case err == nil, errors.As(err, &ne) && alreadyKnown(ne.Message):
		resp.Submitted = true
	case errors.As(err, &ne):
		resp.SubmitErrorCode, resp.SubmitError = int32(ne.Code), ne.Message
	default:
		resp.SubmitErrorCode, resp.SubmitError = rpcInternal, err.Error()
		return false
	}
	return true
}

// alreadyKnown reports whether a node's refusal of a raw transaction says
// it has it already (geth, Nethermind, Besu and Erigon word it so).
func alreadyKnown(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "already known") || strings.Contains(m, "alreadyknown") || strings.Contains(m, "known transaction")
}

func (s *service) SignMessage(ctx context.Context, req *sigilv1.SignMessageRequest) (*sigilv1.SignMessageResponse, error) {
	sg, err := s.d.Keys.ForSigning(ctx, req.GetKeyId(), Name)
	if err != nil {
		return nil, err
	}
	var sig []byte
	err = s.d.Sign(ctx, sg, func(ctx context.Context) (err error) {
		sig, err = s.eth.SignMessage(ctx, sg, req.GetMessage())
		return err
	})
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
	err = s.d.Sign(ctx, sg, func(ctx context.Context) error {
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
