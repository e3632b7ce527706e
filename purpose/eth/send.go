package eth

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
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
type sender struct{ keys sync.Map } // qualified key ID → *keySends

// keySends is one key's send lock (a channel a waiter can give up on)
// and what only its holder reads or writes: the key's last send the node
// took.
type keySends struct {
	lock chan struct{}
	last taken
}

// taken is a send the node accepted: its chain and nonce, and when the
// node's count it was built on was read (a send built on an earlier
// send keeps that one's time).
type taken struct {
	chain   string
	nonce   uint64
	counted time.Time
}

// TakenMaxAge is how long a send the node took stands in for the node's
// pending count and the key's ledger: the next sends of the key within
// it of the last time the count was read take the next nonces without
// reading either. The count lags what the node took while it takes a
// block in, and behind a provider's load balancer; asked again
// TakenMaxAge after it was last asked, however many sends passed, it
// finds a transaction the node dropped since.
const TakenMaxAge = 2 * time.Second

// fresh reports whether the count t was built on was read within
// TakenMaxAge of now.
func (t taken) fresh(now time.Time) bool {
	return !t.counted.IsZero() && now.Sub(t.counted) < TakenMaxAge && !now.Before(t.counted)
}

// basis is what a send's nonce is built on: the chain, the node's
// pending count, the highest nonce the key signed on each chain, and
// when the count was read.
type basis struct {
	chain   *big.Int
	pending uint64
	signed  map[string]uint64
	counted time.Time
}

// lock takes key id's lock, or gives up when ctx ends; the keySends it
// returns is the caller's until it calls unlock.
func (s *sender) lock(ctx context.Context, id string) (*keySends, func(), error) {
	m, _ := s.keys.LoadOrStore(id, &keySends{lock: make(chan struct{}, 1)})
	k := m.(*keySends)
	select {
	case k.lock <- struct{}{}:
		return k, func() { <-k.lock }, nil
	case <-ctx.Done():
		return nil, nil, errs.FromContext(ctx, "waiting for this key's previous send")
	}
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
		return nil, errNoUpstream
	}
	obj, id, err := h.txParams(ctx, params)
	if err != nil {
		return nil, err
	}
	c.keyID = id
	// Decided, and a request of the caller's quota spent, before the node
	// is asked anything: a key the caller may not sign with is refused as
	// an address no key has, and a caller past its quota costs the node
	// nothing. (The signature spends a second request.)
	if err := h.inv.Charge(ctx, OpSignTx, id); err != nil {
		return nil, err
	}
	if err := h.mayFillFees(ctx, id, obj); err != nil {
		return nil, err
	}
	_, given := obj["nonce"]
	var mine *keySends
	if !given {
		k, unlock, err := h.sending.lock(ctx, namespace.Qualify(namespace.FromContext(ctx), id))
		if err != nil {
			return nil, err
		}
		defer unlock()
		mine = k
	}
	b, err := h.nextFrom(ctx, id, obj, mine)
	if err != nil {
		return nil, err
	}
	chain := b.chain
	var n uint64
	var out sigilv1.SignTransactionResponse
	for try := 0; ; try++ {
		if !given {
			if n, err = nextNonce(b.pending, b.signed, chain, try); err != nil {
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
	if mine != nil && out.GetSubmitted() {
		mine.last = taken{chain: chain.String(), nonce: n, counted: b.counted}
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

// nextFrom completes obj from the node (see fill) and, for a send whose
// nonce Sigil chooses (mine: the key's sends, held by the caller), says
// what that nonce is built on: the node's pending count and the highest
// nonce the key signed on each chain. Right after a send of the key the
// node took, that send stands in for both (see TakenMaxAge): a nonce
// another path signed since is found taken by the nonce guard's claim
// and the next one tried. Otherwise the node and the ledger are read at
// once, under the key's lock so both see the key's previous send, and a
// nonce the node lacks is refused (noHole).
func (h *rpcHandler) nextFrom(ctx context.Context, id string, obj map[string]json.RawMessage, mine *keySends) (basis, error) {
	if mine != nil {
		last := mine.last
		mine.last = taken{} // set again once this send is taken
		if last.fresh(time.Now()) {
			chain, _, err := h.fill(ctx, obj, obj["from"], false)
			if err != nil || chain.String() == last.chain {
				return basis{chain, last.nonce + 1, map[string]uint64{last.chain: last.nonce}, last.counted}, err
			}
		}
	}
	b := basis{counted: time.Now()}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { b.chain, b.pending, err = h.fill(gctx, obj, obj["from"], mine != nil); return err })
	if mine != nil {
		g.Go(func() (err error) { b.signed, err = h.highestSigned(gctx, id); return err })
	}
	if err := g.Wait(); err != nil || mine == nil {
		return b, err
	}
	return b, h.noHole(ctx, id, b.pending, b.signed, b.chain)
}

// mayFillFees refuses to take fees or gas from the node for a key
// without a max_fee: the node would set them (what a transaction may burn
// is gas × fee cap), and a daily limit counts value, not fees. Fees and
// gas the caller gives are its own.
func (h *rpcHandler) mayFillFees(ctx context.Context, id string, obj map[string]json.RawMessage) error {
	_, price := obj["gasPrice"]
	_, feeCap := obj["maxFeePerGas"]
	_, gas := obj["gas"]
	if (price || feeCap) && gas {
		return nil
	}
	k, err := h.keys.Get(ctx, namespace.Qualify(namespace.FromContext(ctx), id))
	if err != nil {
		return err
	}
	if PolicyOf(k).MaxFee == nil {
		return errs.New(errs.FailedPrecondition, "eth_sendTransaction: key %q has no max_fee, so its fees and gas are not taken from the node (which could set any, and the daily limit counts value only); give gas and maxFeePerGas or gasPrice, or set --max-fee on the key", id)
	}
	return nil
}

// nonceTaken reports whether a signature was refused because its nonce
// was signed meanwhile for another transaction (by another replica). A
// signature of it still in progress (Aborted) is not taken: it may yet
// fail, and stepping past it would leave a gap.
func nonceTaken(err error) bool {
	st := status.Convert(err)
	return st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), "was signed for transaction")
}

// noHole refuses a send while the node lacks a nonce the key signed on
// chain (its pending count is at or below the highest signed): a
// transaction stacked past it would wait behind the missing one, and
// every retry "succeed" unmined, until the missing one lands and all of
// them execute. The caller gets the missing transaction's bytes, kept by
// the nonce guard, to resubmit (or replace) first. A transaction of
// another replica between its signature and its submission is refused
// too, for as long as that takes.
func (h *rpcHandler) noHole(ctx context.Context, id string, pending uint64, signed map[string]uint64, chain *big.Int) error {
	highest, ok := signed[chain.String()]
	if !ok || pending > highest {
		return nil
	}
	rec, err := h.ledger.ReadLedger(ctx, namespace.Qualify(namespace.FromContext(ctx), id))
	if err != nil {
		return err
	}
	t, err := readNonces(rec)
	if err != nil {
		return err
	}
	data := map[string]any{"nonce": hexutil.EncodeUint64(pending)}
	if e := t.chain(chain).Nonces[strconv.FormatUint(pending, 10)]; e != nil && len(e.Signed) > 0 {
		if known, err := h.nodeHasAny(ctx, e.Signed); err != nil || known {
			return err
		}
		last := e.Signed[len(e.Signed)-1]
		if len(last.Raw) > 0 {
			data["raw"], data["hash"] = last.Raw, crypto.Keccak256Hash(last.Raw).Hex()
		}
	}
	b, _ := json.Marshal(data)
	return &NodeError{Code: rpcServerError, Data: b, Message: fmt.Sprintf("nonce %d was signed for this key but the node does not have it (its next nonce is %d, this key signed up to %d): a send now would wait behind it unmined; resubmit it (data.raw, if kept) or replace it, then send again", pending, pending, highest)}
}

// nodeHasAny reports whether the node knows one of the transactions
// signed for a nonce, pending or mined. Its pending count can lag what
// it took: geth recounts an account's nonces while it takes a block in,
// and a provider's load balancer may ask a node the transaction has not
// reached; a hole is only a hole if the transaction itself is missing.
func (h *rpcHandler) nodeHasAny(ctx context.Context, signed []*txFacts) (bool, error) {
	for _, f := range signed {
		if len(f.Raw) == 0 { // only the newest nonces keep their bytes, hence their hash
			continue
		}
		var tx json.RawMessage
		if err := h.node.Call(ctx, &tx, "eth_getTransactionByHash", crypto.Keccak256Hash(f.Raw).Hex()); err != nil {
			return false, err
		}
		if len(tx) > 0 && string(tx) != "null" {
			return true, nil
		}
	}
	return false, nil
}

// highestSigned is the highest nonce key id signed on each chain it
// signed on, from its ledger (none without one).
func (h *rpcHandler) highestSigned(ctx context.Context, id string) (map[string]uint64, error) {
	if h.ledger == nil {
		return nil, nil
	}
	rec, err := h.ledger.ReadLedger(ctx, namespace.Qualify(namespace.FromContext(ctx), id))
	if err != nil {
		return nil, err
	}
	t, err := readNonces(rec)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for chain, c := range t.Chains {
		if c.History {
			out[chain] = c.Highest
		}
	}
	return out, nil
}

// nextNonce is the nonce a send on chain takes: one past the highest the
// key signed there or, for a key that never signed there, the node's
// pending count (0: a key made in the HSM sent nothing before), plus
// skip (nonces found taken since). A node counting past what the key
// signed is not believed: nonces it made up would leave the key's real
// ones out of reach for good.
func nextNonce(pending uint64, signed map[string]uint64, chain *big.Int, skip int) (uint64, error) {
	h, ok := signed[chain.String()]
	switch {
	case ok && pending > h+1:
		return 0, errs.New(errs.FailedPrecondition, "the node says nonce %d is next, but this key signed only up to %d on chain %s: a node that counts transactions this key never signed is not believed; give the nonce yourself if that is right", pending, h, chain)
	case ok:
		return h + 1 + uint64(skip), nil
	case pending > 0: // a key made in the HSM has sent nothing anywhere else
		return 0, errs.New(errs.FailedPrecondition, "the node says nonce %d is next for a key that never signed on chain %s; give the nonce yourself if that is right", pending, chain)
	}
	return pending + uint64(skip), nil
}

// fill completes a transaction from the node: its chain ID (a given one
// must be the node's), gas (eth_estimateGas) and fees (EIP-1559 from the
// latest base fee and eth_maxPriorityFeePerGas; eth_gasPrice on a chain
// without base fees; a suggestion reused for FeeMaxAge). The node is asked
// all it needs at once, each answer decoded into its own variable, all
// done before fill returns. It returns the chain ID
// and, if wantNonce, the node's pending count for from.
func (h *rpcHandler) fill(ctx context.Context, obj map[string]json.RawMessage, from json.RawMessage, wantNonce bool) (*big.Int, uint64, error) {
	_, price := obj["gasPrice"]
	_, feeCap := obj["maxFeePerGas"]
	_, tipCap := obj["maxPriorityFeePerGas"]
	_, hasGas := obj["gas"]
	var (
		calls   []func(context.Context) error
		id      hexutil.Big
		gas     hexutil.Uint64
		pending hexutil.Uint64
		fee     *fees
	)
	if wantNonce {
		calls = append(calls, h.node.call(&pending, "eth_getTransactionCount", from, "pending"))
	}
	chain := h.node.knownChain(time.Now())
	if chain == nil {
		calls = append(calls, h.node.call(&id, "eth_chainId"))
	}
	if !hasGas { // estimated as given: the fees a call pays do not change its gas
		calls = append(calls, h.node.call(&gas, "eth_estimateGas", maps.Clone(obj)))
	}
	if !price && !(feeCap && tipCap) {
		if fee = h.node.suggestion(time.Now()); fee == nil {
			fee = &fees{at: time.Now()}
			calls = append(calls, h.node.call((*headOf)(fee), "eth_getBlockByNumber", "latest", false), h.node.call((*tipOf)(fee), "eth_maxPriorityFeePerGas"))
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, call := range calls {
		g.Go(func() error { return call(gctx) })
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	if chain == nil {
		chain = id.ToInt()
		h.node.chain.Store(&chainID{id: chain, at: time.Now()})
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
	if fee != nil {
		if err := h.setFees(ctx, obj, fee); err != nil {
			return nil, 0, err
		}
	}
	return chain, uint64(pending), nil
}

// headOf decodes a block's base fee into a fees.
type headOf fees

func (f *headOf) UnmarshalJSON(b []byte) error {
	var head struct {
		BaseFee *hexutil.Big `json:"baseFeePerGas"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return err
	}
	if head.BaseFee != nil {
		f.baseFee = head.BaseFee.ToInt()
	}
	return nil
}

// tipOf decodes eth_maxPriorityFeePerGas into a fees.
type tipOf fees

func (f *tipOf) UnmarshalJSON(b []byte) error {
	var tip hexutil.Big
	if err := json.Unmarshal(b, &tip); err != nil {
		return err
	}
	f.tip = tip.ToInt()
	return nil
}

// setFees sets the fees obj lacks from the node's suggestion f, asking
// eth_gasPrice on a chain without base fees, and keeps f for reuse.
func (h *rpcHandler) setFees(ctx context.Context, obj map[string]json.RawMessage, f *fees) error {
	if f.baseFee == nil { // no EIP-1559 on this chain
		if f.gasPrice == nil {
			var gp hexutil.Big
			if err := h.node.Call(ctx, &gp, "eth_gasPrice"); err != nil {
				return err
			}
			f.gasPrice = gp.ToInt()
		}
		h.node.fees.Store(f)
		obj["gasPrice"] = quantity(f.gasPrice)
		return nil
	}
	h.node.fees.Store(f)
	if _, ok := obj["maxPriorityFeePerGas"]; !ok {
		obj["maxPriorityFeePerGas"] = quantity(f.tip)
	}
	if _, ok := obj["maxFeePerGas"]; !ok {
		var t hexutil.Big
		json.Unmarshal(obj["maxPriorityFeePerGas"], &t)
		obj["maxFeePerGas"] = quantity(new(big.Int).Add(new(big.Int).Mul(f.baseFee, big.NewInt(2)), t.ToInt()))
	}
	return nil
}

func quantity(n *big.Int) json.RawMessage {
	return json.RawMessage(`"` + hexutil.EncodeBig(n) + `"`)
}
