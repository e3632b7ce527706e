package eth

import (
	"context"
	"encoding/json"
	"maps"
	"math/big"
	"strings"
	"sync"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/internal/strictjson"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// maxNonceTries bounds how many nonces eth_sendTransaction tries when the
// one it chose was taken meanwhile (by another replica).
const maxNonceTries = 16

// sender serializes the eth_sendTransaction calls of one key in this
// process, so concurrent sends take consecutive nonces instead of racing
// for one; other replicas' sends are caught by the nonce guard, and
// answered by trying the next nonce.
type sender struct{ locks sync.Map } // qualified key ID → *sync.Mutex

func (s *sender) lock(id string) func() {
	m, _ := s.locks.LoadOrStore(id, &sync.Mutex{})
	m.(*sync.Mutex).Lock()
	return m.(*sync.Mutex).Unlock
}

// sendTransaction is eth_sendTransaction, as Web3Signer answers it in
// front of a node: what the transaction lacks is filled from the node
// (chainId, checked against a given one; gas; fees; the nonce, past both
// the node's pending count and every nonce the key signed), it is signed
// through the one access path (policy, limits, approvals, quotas, audit)
// and submitted; the answer is its hash. Held for approval, it is
// submitted by the replica that runs it once approved.
func (h *rpcHandler) sendTransaction(ctx context.Context, c *rpcCall, params []json.RawMessage) (any, error) {
	if h.node == nil {
		return nil, errs.New(errs.FailedPrecondition, "eth_sendTransaction: this endpoint has no execution client behind it (ethrpc.upstream); sign with eth_signTransaction and send it yourself")
	}
	obj, id, err := h.txParams(ctx, params)
	if err != nil {
		return nil, err
	}
	c.keyID = id
	// Decided before the node is asked anything: a key the caller may
	// not sign with is refused as an address no key has.
	if h.inv.Allowed(ctx, OpSignTx, id) != nil {
		return nil, errs.New(errs.PermissionDenied, "permission denied")
	}
	if err := h.mayFillFees(ctx, id, obj); err != nil {
		return nil, err
	}
	_, given := obj["nonce"]
	chain, pending, err := h.fill(ctx, obj, obj["from"], !given)
	if err != nil {
		return nil, err
	}
	if !given {
		defer h.sending.lock(namespace.Qualify(namespace.FromContext(ctx), id))()
	}
	var out sigilv1.SignTransactionResponse
	for try := 0; ; try++ {
		if !given {
			n, err := h.nextNonce(ctx, id, pending, chain, try)
			if err != nil {
				return nil, err
			}
			obj["nonce"] = json.RawMessage(`"` + hexutil.EncodeUint64(n) + `"`)
		}
		req := &sigilv1.SignTransactionRequest{KeyId: id, Submit: true, Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: strictjson.Encode(obj)}}
		out.Reset()
		err = h.invoke(ctx, c, sigilv1.EthereumService_SignTransaction_FullMethodName, req, &out)
		if err == nil || given || !nonceTaken(err) || try+1 == maxNonceTries {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if !out.GetSubmitted() {
		// Signed, and in the audit log, but not taken (or not known to be:
		// a node that timed out may have it): the caller gets the hash and
		// the bytes, to look for or resubmit before sending again.
		data, _ := json.Marshal(map[string]any{"hash": out.GetHash(), "raw": hexutil.Bytes(out.GetRawTransaction())})
		return nil, &NodeError{Code: int(out.GetSubmitErrorCode()), Message: out.GetSubmitError(), Data: data}
	}
	return out.GetHash(), nil
}

// mayFillFees refuses to take fees from the node for a key without a
// max_fee: the node would set them, and a daily limit counts value, not
// fees. Fees the caller gives are its own.
func (h *rpcHandler) mayFillFees(ctx context.Context, id string, obj map[string]json.RawMessage) error {
	_, price := obj["gasPrice"]
	_, feeCap := obj["maxFeePerGas"]
	if price || feeCap {
		return nil
	}
	k, err := h.keys.Get(ctx, namespace.Qualify(namespace.FromContext(ctx), id))
	if err != nil {
		return err
	}
	if PolicyOf(k).MaxFee == nil {
		return errs.New(errs.FailedPrecondition, "eth_sendTransaction: key %q has no max_fee, so its fees are not taken from the node (which could set any, and the daily limit counts value only); give maxFeePerGas or gasPrice, or set --max-fee on the key", id)
	}
	return nil
}

// nonceTaken reports whether a signature was refused because its nonce
// was taken meanwhile: signed for another transaction, or being signed.
func nonceTaken(err error) bool {
	st := status.Convert(err)
	return st.Code() == codes.Aborted || st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), "was signed for transaction")
}

// nextNonce is the nonce a send from key id on chain takes: the node's
// pending count or one past the highest the key signed there (read now,
// under the key's lock), whichever is larger, plus skip (nonces found
// taken already).
func (h *rpcHandler) nextNonce(ctx context.Context, id string, pending uint64, chain *big.Int, skip int) (uint64, error) {
	n, next := pending, uint64(0)
	if h.ledger != nil {
		rec, err := h.ledger.ReadLedger(ctx, namespace.Qualify(namespace.FromContext(ctx), id))
		if err != nil {
			return 0, err
		}
		t, err := readNonces(rec)
		if err != nil {
			return 0, err
		}
		if c, ok := t.Chains[chain.String()]; ok && c.History {
			next = c.Highest + 1
		}
	}
	// A node's count far past what the key ever signed is not taken: it
	// would leave the key's real next nonce out of reach for good.
	if n > next && n-next > NonceWindow {
		return 0, errs.New(errs.FailedPrecondition, "the node says nonce %d is next, %d past the %d this key would sign next; give the nonce yourself if that is right", n, n-next, next)
	}
	return max(n, next) + uint64(skip), nil
}

// fill completes a transaction from the node: its chain ID (a given one
// must be the node's), gas (eth_estimateGas) and fees (EIP-1559 from the
// latest base fee and eth_maxPriorityFeePerGas; eth_gasPrice on a chain
// without base fees). The node is asked all it needs at once; each query
// writes its own result, and all are done before fill returns. It returns
// the chain ID and, if wantNonce, the node's pending count for from.
func (h *rpcHandler) fill(ctx context.Context, obj map[string]json.RawMessage, from json.RawMessage, wantNonce bool) (*big.Int, uint64, error) {
	_, price := obj["gasPrice"]
	_, feeCap := obj["maxFeePerGas"]
	_, tipCap := obj["maxPriorityFeePerGas"]
	_, hasGas := obj["gas"]
	needFees := !price && !(feeCap && tipCap)
	var (
		chain *big.Int
		head  struct {
			BaseFee *hexutil.Big `json:"baseFeePerGas"`
		}
		tip, gp hexutil.Big
		gas     hexutil.Uint64
		pending hexutil.Uint64
	)
	g, gctx := errgroup.WithContext(ctx)
	if wantNonce {
		g.Go(func() error { return h.node.Call(gctx, &pending, "eth_getTransactionCount", from, "pending") })
	}
	g.Go(func() (err error) { chain, err = h.node.chainID(gctx); return err })
	if needFees {
		g.Go(func() error { return h.node.Call(gctx, &head, "eth_getBlockByNumber", "latest", false) })
		if !tipCap {
			g.Go(func() error { return h.node.Call(gctx, &tip, "eth_maxPriorityFeePerGas") })
		}
	}
	if !hasGas { // estimated as given: the fees a call pays do not change its gas
		estimate := maps.Clone(obj)
		g.Go(func() error { return h.node.Call(gctx, &gas, "eth_estimateGas", estimate) })
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	if raw, ok := obj["chainId"]; ok {
		var given hexutil.Big
		if json.Unmarshal(raw, &given) != nil || given.ToInt().Cmp(chain) != 0 {
			return nil, 0, errs.New(errs.InvalidArgument, "transaction: chainId %s is not the node's (%s)", raw, chain)
		}
	}
	obj["chainId"] = quantity(chain)
	if !hasGas {
		obj["gas"] = json.RawMessage(`"` + gas.String() + `"`)
	}
	if !needFees {
		return chain, uint64(pending), nil
	}
	if head.BaseFee == nil { // no EIP-1559 on this chain
		if err := h.node.Call(ctx, &gp, "eth_gasPrice"); err != nil {
			return nil, 0, err
		}
		obj["gasPrice"] = quantity(gp.ToInt())
		return chain, uint64(pending), nil
	}
	if !tipCap {
		obj["maxPriorityFeePerGas"] = quantity(tip.ToInt())
	}
	if !feeCap {
		var t hexutil.Big
		json.Unmarshal(obj["maxPriorityFeePerGas"], &t)
		obj["maxFeePerGas"] = quantity(new(big.Int).Add(new(big.Int).Mul(head.BaseFee.ToInt(), big.NewInt(2)), t.ToInt()))
	}
	return chain, uint64(pending), nil
}

func quantity(n *big.Int) json.RawMessage {
	return json.RawMessage(`"` + hexutil.EncodeBig(n) + `"`)
}
