package eth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/internal/strictjson"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

// Limits of the JSON-RPC endpoint, as on the gRPC path.
const (
	MaxRPCBodyBytes = 256 << 10
	MaxRPCBatch     = 32
)

// ClefAPIVersion is the version of clef's external API the endpoint
// speaks (what account_version answers).
const ClefAPIVersion = "6.1.0"

// RPC serves the Ethereum remote-signer protocols over JSON-RPC 2.0, so
// software that already speaks them signs through Sigil unchanged:
// Web3Signer's eth1 methods (eth_accounts, eth_sign, eth_signTransaction,
// eth_signTypedData, and GET /upcheck; personal_sign too, which ethers'
// JsonRpcSigner sends) and clef's external API as
// go-ethereum's accounts/external speaks it (account_version,
// account_list, account_signTransaction, account_signData with
// text/plain, account_signTypedData).
//
// Accounts are addressed by address: an eth key's. Each call is turned
// into the gRPC request it stands for and run through inv, so the client
// certificate, the policy file, the request checks, the spending policy
// and the audit record apply exactly as over gRPC. A refusal is a JSON-RPC
// error whose message says which rule refused.
func RPC(inv purpose.Invoker, d purpose.Deps) http.Handler {
	h := &rpcHandler{inv: inv, keys: d.Keys, ledger: d.Ledger, node: settingsOf(d).Upstream}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /upcheck", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("POST /", h.serve)
	return mux
}

var _ purpose.HTTPAPI = Purpose{}

// HTTPHandler is the Ethereum JSON-RPC endpoint (RPC).
func (Purpose) HTTPHandler(inv purpose.Invoker, d purpose.Deps) http.Handler {
	return RPC(inv, d)
}

type rpcHandler struct {
	inv     purpose.Invoker
	keys    *keyring.Keyring
	ledger  keyring.Ledger
	node    *Upstream // nil: no execution client behind the endpoint
	sending sender
}

type rpcRequest struct {
	JSONRPC string            `json:"jsonrpc"`
	ID      json.RawMessage   `json:"id"`
	Method  string            `json:"method"`
	Params  []json.RawMessage `json:"params"`
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"` // {"retry_after_ms": N} past a quota; {"approval_id": ID} held for approval
}

type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

// The JSON-RPC 2.0 error codes, and those of EIP-1193 and EIP-1474 that
// wallets' libraries name (docs/ethereum.md has the table).
const (
	rpcParse          = -32700
	rpcInvalidRequest = -32600
	rpcNoMethod       = -32601
	rpcInvalidParams  = -32602
	rpcInternal       = -32603
	rpcUnauthorized   = 4100   // EIP-1193: a refusal by the policy or the access rules
	rpcUnsupported    = 4200   // EIP-1193: a method this endpoint does not offer as configured
	rpcHeld           = -32002 // EIP-1474 resource unavailable: held for approval, data.approval_id
	rpcLimit          = -32005 // EIP-1474 limit exceeded: a quota or a size
	rpcServerError    = -32000 // a node's error under a code Sigil keeps for its own answers
)

// rpcDeadline bounds a whole request, a batch included, under the HTTP
// write timeout: a call not done by then fails (and is not signed)
// instead of being signed with its answer lost.
const rpcDeadline = 25 * time.Second

func (h *rpcHandler) serve(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		// Not a form a browser may send cross-site without asking first.
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRPCBodyBytes))
	if err != nil {
		writeRPC(w, http.StatusRequestEntityTooLarge, rpcResponse{JSONRPC: "2.0", ID: json.RawMessage("null"), Error: &rpcError{Code: rpcLimit, Message: "request body over 256 KiB"}})
		return
	}
	if err := strictjson.Check("request", body, MaxRPCBodyBytes); err != nil {
		writeRPC(w, http.StatusOK, rpcResponse{JSONRPC: "2.0", ID: json.RawMessage("null"), Error: &rpcError{Code: rpcParse, Message: err.Error()}})
		return
	}
	ctx, cancel := context.WithTimeout(h.inv.HTTPContext(r), rpcDeadline)
	defer cancel()
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '[' {
		var batch []json.RawMessage
		if err := json.Unmarshal(trimmed, &batch); err != nil || len(batch) == 0 || len(batch) > MaxRPCBatch {
			writeRPC(w, http.StatusOK, rpcResponse{JSONRPC: "2.0", ID: json.RawMessage("null"), Error: &rpcError{Code: rpcInvalidRequest, Message: "a batch holds 1 to 32 requests"}})
			return
		}
		out := make([]any, 0, len(batch))
		size := 0
		for _, one := range batch {
			answer := h.call(ctx, one)
			// A batch's answers together are bounded as one node answer is.
			// Error data counts as results do: a node's revert data can be
			// as large.
			if r, ok := answer.(rpcResponse); ok {
				if res, ok := r.Result.(json.RawMessage); ok {
					size += len(res)
				}
				if r.Error != nil {
					size += len(r.Error.Message) + rawLen(r.Error.Data)
				}
				if size > MaxUpstreamBytes {
					r.Result, r.Error = nil, &rpcError{Code: rpcLimit, Message: fmt.Sprintf("the batch's answers are over %d bytes together; ask for less at a time", MaxUpstreamBytes)}
					answer = r
				}
			}
			out = append(out, answer)
		}
		writeRPC(w, http.StatusOK, out)
		return
	}
	writeRPC(w, http.StatusOK, h.call(ctx, body))
}

func writeRPC(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// call answers one JSON-RPC request: Sigil's own methods here, the
// node's forwarded verbatim to the upstream (as the node answers them).
func (h *rpcHandler) call(ctx context.Context, raw json.RawMessage) any {
	var req rpcRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.JSONRPC != "2.0" || req.Method == "" {
		return rpcResponse{JSONRPC: "2.0", ID: json.RawMessage("null"), Error: &rpcError{Code: rpcInvalidRequest, Message: "not a JSON-RPC 2.0 request"}}
	}
	if req.ID == nil {
		req.ID = json.RawMessage("null")
	}
	if h.node != nil && Forwardable(req.Method) {
		out, err := h.forward(ctx, raw)
		if err != nil {
			return rpcResponse{JSONRPC: "2.0", ID: req.ID, Error: h.toRPCError(err)}
		}
		// The node's answer under the caller's ID: a node does not decide
		// which request an answer belongs to, nor add members.
		out.JSONRPC, out.ID = "2.0", req.ID
		return out
	}
	c := &rpcCall{}
	result, err := h.dispatch(ctx, c, req.Method, req.Params)
	if !c.invoked && req.Method != "account_version" {
		// No gRPC method stood for it (a listing, or a refusal before
		// one): audited here, and unanswered if it cannot be.
		if aerr := h.inv.Record(ctx, rpcOperation(req.Method), c.keyID, err); aerr != nil {
			err = aerr
		}
	}
	if err != nil {
		return rpcResponse{JSONRPC: "2.0", ID: req.ID, Error: h.toRPCError(err)}
	}
	return rpcResponse{JSONRPC: "2.0", ID: req.ID, Result: result}
}

// forward sends one request to the node verbatim, for a caller that may
// sign with some eth key, spending its quota as a listing does (the node
// is no open proxy, nor a free one), and returns the node's answer.
// Forwarded calls use no key and are not audited.
func (h *rpcHandler) forward(ctx context.Context, raw json.RawMessage) (rpcResponse, error) {
	if err := h.chargeAny(ctx); err != nil {
		return rpcResponse{}, err
	}
	out, err := h.node.Forward(ctx, raw)
	if err != nil {
		return rpcResponse{}, err
	}
	var answer struct {
		Result json.RawMessage `json:"result"`
		Error  *NodeError      `json:"error"`
	}
	if err := json.Unmarshal(out, &answer); err != nil {
		return rpcResponse{}, errs.New(errs.Unavailable, "the node's answer is not a JSON-RPC response")
	}
	if answer.Error != nil {
		e := nodeRPCError(answer.Error)
		return rpcResponse{Error: &e}, nil
	}
	if answer.Result == nil {
		answer.Result = json.RawMessage("null")
	}
	return rpcResponse{Result: answer.Result}, nil
}

// rpcCall is what a call did: whether it reached Invoke (which audits),
// and the key it named.
type rpcCall struct {
	invoked bool
	keyID   string
}

// rpcOperation names a JSON-RPC method in the audit record; a method
// neither protocol has is "eth.rpc.unknown" (its name is the client's).
func rpcOperation(method string) string {
	switch method {
	case "eth_accounts", "account_list":
		return "eth.accounts"
	case "eth_sign", "personal_sign", "account_signData", "eth_signTypedData", "eth_signTypedData_v3", "eth_signTypedData_v4", "account_signTypedData",
		"eth_signTransaction", "account_signTransaction", "eth_sendTransaction":
		return "eth.rpc." + method
	}
	return "eth.rpc.unknown"
}

// nodeRPCError is a node's error as the caller gets it: as the node gave
// it, but for a code Sigil answers with itself (a refusal, a hold, a
// quota), which a node cannot be let to forge (a held request's
// approval ID, say): that becomes -32000, its message and data kept.
func nodeRPCError(ne *NodeError) rpcError {
	e := rpcError{Code: ne.Code, Message: ne.Message, Data: ne.Data}
	switch e.Code {
	case rpcUnauthorized, rpcUnsupported, rpcHeld, rpcLimit:
		e.Code = rpcServerError
	}
	return e
}

// rawLen is the length of an error's data as it will be written.
func rawLen(v any) int {
	switch d := v.(type) {
	case nil:
		return 0
	case json.RawMessage:
		return len(d)
	}
	b, _ := json.Marshal(v)
	return len(b)
}

// errNoMethod is a method neither protocol has.
var errNoMethod = errors.New("no such method")

// errNoUpstream is eth_sendTransaction on an endpoint with no node
// behind it: a method not offered as configured, not a refusal.
var errNoUpstream = errors.New("eth_sendTransaction: this endpoint has no execution client behind it (ethrpc.upstream); sign with eth_signTransaction and send it yourself")

func (h *rpcHandler) dispatch(ctx context.Context, c *rpcCall, method string, params []json.RawMessage) (any, error) {
	switch method {
	case "account_version":
		return ClefAPIVersion, nil
	case "eth_accounts", "account_list":
		return h.accounts(ctx)
	case "eth_sign": // [address, data]
		return h.signMessage(ctx, c, params, 0, 1)
	case "personal_sign": // [data, address] as ethers sends it, or [data, address, password] as web3.js does
		if len(params) == 3 {
			params = params[:2] // the password unlocks nothing here; never read, never logged
		}
		return h.signMessage(ctx, c, params, 1, 0)
	case "account_signData": // [content type, address, data]
		var mime string
		if len(params) != 3 || json.Unmarshal(params[0], &mime) != nil {
			return nil, errs.New(errs.InvalidArgument, "params: [content type, address, data]")
		}
		if mime != "text/plain" {
			return nil, errs.New(errs.InvalidArgument, "content type %q: Sigil signs text/plain (EIP-191) data; typed data through account_signTypedData", mime)
		}
		return h.signMessage(ctx, c, params[1:], 0, 1)
	case "eth_signTypedData", "eth_signTypedData_v3", "eth_signTypedData_v4", "account_signTypedData": // [address, document]
		return h.signTypedData(ctx, c, params)
	case "eth_signTransaction": // [transaction]
		out, err := h.signTransaction(ctx, c, params)
		if err != nil {
			return nil, err
		}
		return hexutil.Bytes(out.GetRawTransaction()), nil
	case "account_signTransaction": // [transaction]; clef answers {raw, tx}
		out, err := h.signTransaction(ctx, c, params)
		if err != nil {
			return nil, err
		}
		tx := new(types.Transaction)
		if err := tx.UnmarshalBinary(out.GetRawTransaction()); err != nil {
			return nil, errs.New(errs.Internal, "the signed transaction: %w", err)
		}
		return map[string]any{"raw": hexutil.Bytes(out.GetRawTransaction()), "tx": tx}, nil
	case "eth_sendTransaction": // [transaction]
		return h.sendTransaction(ctx, c, params)
	case "eth_chainId", "net_version":
		if h.node == nil {
			return h.chainID(ctx, method)
		}
	}
	return nil, errNoMethod
}

// chainID answers eth_chainId (hex) or net_version (decimal) with no node
// behind the endpoint: the one chain the caller's eth keys allow.
func (h *rpcHandler) chainID(ctx context.Context, method string) (any, error) {
	if err := h.chargeAny(ctx); err != nil {
		return nil, err
	}
	chains := map[uint64]bool{}
	ns := namespace.FromContext(ctx)
	for _, k := range h.keys.Select(ctx, func(k *keyring.Key) bool { return k.Purpose == Name && !k.Deleted && namespace.Of(k.ID) == ns }) {
		if h.mayUse(ctx, namespace.Local(k.ID)) {
			for _, id := range PolicyOf(k).ChainIDs {
				chains[id] = true
			}
		}
	}
	if len(chains) != 1 {
		return nil, errs.New(errs.FailedPrecondition, "%s: your eth keys allow %d chains, so the endpoint cannot say which is meant; set ethrpc.upstream (the node answers), or keep your keys to one chain (chain_ids)", method, len(chains))
	}
	for id := range chains {
		if method == "net_version" {
			return strconv.FormatUint(id, 10), nil
		}
		return hexutil.Uint64(id), nil
	}
	return nil, nil
}

// signOps are the operations an eth account is used for.
var signOps = []authz.Op{OpSignTx, OpSignMessage, OpSignTypedData}

// mayUseAny refuses a caller that may sign with no eth key at all (or
// whose certificate is not valid now) before the keyring is looked at.
func (h *rpcHandler) mayUseAny(ctx context.Context) error {
	var err error
	for _, op := range signOps {
		if err = h.inv.Allowed(ctx, op, ""); err == nil {
			return nil
		}
	}
	return err
}

// chargeAny spends one request of the caller's quota under the first
// signing operation a rule allows it on any key; PermissionDenied if none.
func (h *rpcHandler) chargeAny(ctx context.Context) error {
	var err error
	for _, op := range signOps {
		if err = h.inv.Charge(ctx, op, ""); err == nil || !denied(err) {
			return err
		}
	}
	return err
}

// denied reports whether err is a refusal by the access rules.
func denied(err error) bool {
	return errs.Is(err, errs.PermissionDenied) || status.Code(err) == codes.PermissionDenied
}

// mayUse reports whether the caller may sign with key id at all.
func (h *rpcHandler) mayUse(ctx context.Context, id string) bool {
	return slices.ContainsFunc(signOps, func(op authz.Op) bool { return h.inv.Allowed(ctx, op, id) == nil })
}

// accounts are the addresses of the eth keys the caller may sign with.
// The listing scans the keyring, so it spends the caller's quota: that
// of the rule that lets it sign (the first of the signing operations one
// allows).
func (h *rpcHandler) accounts(ctx context.Context) ([]common.Address, error) {
	if err := h.chargeAny(ctx); err != nil {
		return nil, err
	}
	out, ns := []common.Address{}, namespace.FromContext(ctx)
	for _, k := range h.keys.Select(ctx, func(k *keyring.Key) bool {
		return k.Purpose == Name && !k.Deleted && Address(k) != "" && namespace.Of(k.ID) == ns
	}) {
		if h.mayUse(ctx, namespace.Local(k.ID)) {
			out = append(out, common.HexToAddress(Address(k)))
		}
	}
	return out, nil
}

// keyOf is the eth key whose address raw (a JSON string) is. An address
// no key has is answered as a denial is: the caller learns nothing of
// keys it may not use.
func (h *rpcHandler) keyOf(ctx context.Context, raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || !common.IsHexAddress(s) {
		return "", errs.New(errs.InvalidArgument, "address: want a 0x-prefixed hex address")
	}
	if err := h.mayUseAny(ctx); err != nil {
		return "", err
	}
	addr, ns := common.HexToAddress(s).Hex(), namespace.FromContext(ctx)
	found := h.keys.Select(ctx, func(k *keyring.Key) bool {
		return k.Purpose == Name && !k.Deleted && strings.EqualFold(Address(k), addr) && namespace.Of(k.ID) == ns
	})
	if len(found) == 0 {
		return "", errs.New(errs.PermissionDenied, "permission denied")
	}
	return namespace.Local(found[0].ID), nil
}

// invoke runs a gRPC request for the call c.
func (h *rpcHandler) invoke(ctx context.Context, c *rpcCall, method string, req, resp proto.Message) error {
	c.invoked = true
	return h.inv.Invoke(ctx, method, req, resp)
}

func (h *rpcHandler) signMessage(ctx context.Context, c *rpcCall, params []json.RawMessage, addrAt, dataAt int) (any, error) {
	if len(params) != 2 {
		return nil, errs.New(errs.InvalidArgument, "params: [address, data]")
	}
	id, err := h.keyOf(ctx, params[addrAt])
	if err != nil {
		return nil, err
	}
	var data hexutil.Bytes
	if err := json.Unmarshal(params[dataAt], &data); err != nil {
		return nil, errs.New(errs.InvalidArgument, "data: want 0x-prefixed hex")
	}
	var out sigilv1.SignMessageResponse
	if err := h.invoke(ctx, c, sigilv1.EthereumService_SignMessage_FullMethodName, &sigilv1.SignMessageRequest{KeyId: id, Message: data}, &out); err != nil {
		return nil, err
	}
	return hexutil.Bytes(out.GetSignature()), nil
}

func (h *rpcHandler) signTypedData(ctx context.Context, c *rpcCall, params []json.RawMessage) (any, error) {
	if len(params) != 2 {
		return nil, errs.New(errs.InvalidArgument, "params: [address, typed data]")
	}
	id, err := h.keyOf(ctx, params[0])
	if err != nil {
		return nil, err
	}
	doc := []byte(params[1])
	var asString string
	if json.Unmarshal(params[1], &asString) == nil { // some clients send the document as a JSON string
		doc = []byte(asString)
	}
	var out sigilv1.SignTypedDataResponse
	if err := h.invoke(ctx, c, sigilv1.EthereumService_SignTypedData_FullMethodName, &sigilv1.SignTypedDataRequest{KeyId: id, TypedDataJson: doc}, &out); err != nil {
		return nil, err
	}
	return hexutil.Bytes(out.GetSignature()), nil
}

// txParams reads the params of a transaction method, [transaction]: the
// object, with null members (as clef's callers send for what they leave
// out) dropped, and the key its from names.
func (h *rpcHandler) txParams(ctx context.Context, params []json.RawMessage) (map[string]json.RawMessage, string, error) {
	if len(params) != 1 {
		return nil, "", errs.New(errs.InvalidArgument, "params: [transaction]")
	}
	obj, err := strictjson.Object("transaction", params[0], MaxTxBytes)
	if err != nil {
		return nil, "", err
	}
	for name, v := range obj {
		if string(v) == "null" {
			delete(obj, name)
		}
	}
	from, ok := obj["from"]
	if !ok {
		return nil, "", errs.New(errs.InvalidArgument, "transaction: from names the account")
	}
	id, err := h.keyOf(ctx, from)
	return obj, id, err
}

// signTransaction signs an eth_signTransaction object whose from names
// the account; null members (as clef's callers send for what they leave
// out) are dropped first.
func (h *rpcHandler) signTransaction(ctx context.Context, c *rpcCall, params []json.RawMessage) (*sigilv1.SignTransactionResponse, error) {
	obj, id, err := h.txParams(ctx, params)
	if err != nil {
		return nil, err
	}
	var out sigilv1.SignTransactionResponse
	req := &sigilv1.SignTransactionRequest{KeyId: id, Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: strictjson.Encode(obj)}}
	if err := h.invoke(ctx, c, sigilv1.EthereumService_SignTransaction_FullMethodName, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// toRPCError turns an error into the JSON-RPC error wallets expect,
// whose message says which rule refused: the message of the gRPC status
// the server's one mapping gives. The node's own errors pass through.
func (h *rpcHandler) toRPCError(err error) *rpcError {
	if errors.Is(err, errNoMethod) {
		return &rpcError{Code: rpcNoMethod, Message: "method not found"}
	}
	if errors.Is(err, errNoUpstream) {
		return &rpcError{Code: rpcUnsupported, Message: err.Error()}
	}
	if ne := (*NodeError)(nil); errors.As(err, &ne) {
		e := nodeRPCError(ne)
		return &e
	}
	st, _ := status.FromError(h.inv.Status(err))
	code := map[codes.Code]int{
		codes.InvalidArgument: rpcInvalidParams, codes.PermissionDenied: rpcUnauthorized, codes.Unauthenticated: rpcUnauthorized,
		codes.FailedPrecondition: rpcUnauthorized, codes.NotFound: rpcUnauthorized, codes.ResourceExhausted: rpcLimit,
	}[st.Code()]
	if code == 0 {
		code = rpcInternal
	}
	out := &rpcError{Code: code, Message: st.Code().String() + ": " + st.Message()}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			out.Data = map[string]int64{"retry_after_ms": d.GetRetryDelay().AsDuration().Milliseconds()}
		case *errdetails.ErrorInfo: // held for approval
			out.Code, out.Data = rpcHeld, map[string]string{"approval_id": d.GetMetadata()["approval_id"]}
		}
	}
	return out
}
