package eth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/purpose"
)

// Upstream is an Ethereum execution client behind the JSON-RPC endpoint,
// as Web3Signer runs in front of one: the methods Sigil does not answer
// and the node may (Forwardable) go to it verbatim, and
// eth_sendTransaction fills a transaction from it and submits the signed
// bytes to it.
type Upstream struct {
	URL string
	// Header is sent with every call (a hosted provider's API key).
	Header http.Header
	// Client carries the TLS client files, if any; a transport of the
	// package's own (http.DefaultTransport's settings, more idle
	// connections) if nil.
	Client *http.Client
	// Timeout bounds each call; DefaultUpstreamTimeout if zero.
	Timeout time.Duration

	chain atomic.Pointer[chainID] // the node's chain ID, asked again after ChainMaxAge
	fees  atomic.Pointer[fees]    // the node's last fee suggestion
}

// fees is a node's fee suggestion: the latest block's base fee (nil on a
// chain without EIP-1559) with eth_maxPriorityFeePerGas, or eth_gasPrice.
type fees struct {
	at       time.Time
	baseFee  *big.Int
	tip      *big.Int
	gasPrice *big.Int
}

// chainID is the node's chain ID as it last said.
type chainID struct {
	id *big.Int
	at time.Time
}

// ChainMaxAge is how long the node's chain ID is reused: a node's chain
// does not change, but one wrong answer (a misrouted request behind a
// provider's load balancer) must not be believed for long.
const ChainMaxAge = 2 * time.Second

// knownChain is the node's chain ID if it was asked for recently, else nil.
func (u *Upstream) knownChain(now time.Time) *big.Int {
	if c := u.chain.Load(); c != nil && now.Sub(c.at) < ChainMaxAge && !now.Before(c.at) {
		return c.id
	}
	return nil
}

// FeeMaxAge is how long a fee suggestion of the node is reused. A block
// is 12 s on mainnet and a base fee moves at most 12.5 % a block, which
// the 2× base fee in a filled fee cap covers; asking for every send
// cost a busy endpoint a tenth of its sends.
const FeeMaxAge = 2 * time.Second

// suggestion is the node's fee suggestion if one is fresh, else nil.
func (u *Upstream) suggestion(now time.Time) *fees {
	if f := u.fees.Load(); f != nil && now.Sub(f.at) < FeeMaxAge && !now.Before(f.at) {
		return f
	}
	return nil
}

// Bounds of a call to the upstream: its deadline, and how large an
// answer is read (a node answering more is refused, not buffered).
const (
	DefaultUpstreamTimeout = 10 * time.Second
	MaxUpstreamBytes       = 8 << 20
)

// Settings are the eth purpose's own settings (purpose.Deps.Settings
// under Name).
type Settings struct {
	// Upstream is the execution client behind the JSON-RPC endpoint;
	// none if nil.
	Upstream *Upstream
}

// settingsOf is the eth settings d carries, or none.
func settingsOf(d purpose.Deps) Settings {
	if s, ok := d.Settings[Name].(*Settings); ok && s != nil {
		return *s
	}
	return Settings{}
}

// forwarded are the methods a caller may send through to the node: its
// reads, filters, gas and fee estimates and eth_sendRawTransaction. The
// node's own accounts and admin (personal_*, admin_*, debug_*, miner_*,
// eth_sign* with its keys, eth_coinbase) are never forwarded.
var forwarded = []string{
	"eth_blobBaseFee", "eth_blockNumber", "eth_call", "eth_chainId", "eth_createAccessList", "eth_estimateGas", "eth_feeHistory",
	"eth_gasPrice", "eth_getBalance", "eth_getBlockByHash", "eth_getBlockByNumber", "eth_getBlockReceipts",
	"eth_getBlockTransactionCountByHash", "eth_getBlockTransactionCountByNumber", "eth_getCode", "eth_getFilterChanges",
	"eth_getFilterLogs", "eth_getLogs", "eth_getProof", "eth_getStorageAt", "eth_getTransactionByBlockHashAndIndex",
	"eth_getTransactionByBlockNumberAndIndex", "eth_getTransactionByHash", "eth_getTransactionCount", "eth_getTransactionReceipt",
	"eth_getUncleByBlockHashAndIndex", "eth_getUncleByBlockNumberAndIndex", "eth_getUncleCountByBlockHash",
	"eth_getUncleCountByBlockNumber", "eth_maxPriorityFeePerGas", "eth_newBlockFilter", "eth_newFilter",
	"eth_newPendingTransactionFilter", "eth_protocolVersion", "eth_sendRawTransaction", "eth_syncing", "eth_uninstallFilter",
	"net_listening", "net_peerCount", "net_version", "web3_clientVersion", "web3_sha3",
}

// Forwardable reports whether method goes through to the node.
func Forwardable(method string) bool { return slices.Contains(forwarded, method) }

// NodeError is an error the node answered: passed through to the caller
// as the node gave it.
type NodeError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *NodeError) Error() string { return fmt.Sprintf("the node answered %d: %s", e.Code, e.Message) }

// Call runs method on the node with params and decodes its result into
// out (nil to drop it). The node's own error is a *NodeError; a node that
// cannot be reached, does not answer within the timeout or answers more
// than MaxUpstreamBytes is Unavailable.
func (u *Upstream) Call(ctx context.Context, out any, method string, params ...any) error {
	if params == nil {
		params = []any{}
	}
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	if err != nil {
		return errs.New(errs.InvalidArgument, "%s: %v", method, err)
	}
	raw, err := u.Forward(ctx, body)
	if err != nil {
		return err
	}
	var resp struct {
		Result json.RawMessage `json:"result"`
		Error  *NodeError      `json:"error"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		return errs.New(errs.Unavailable, "the node's answer to %s is not JSON-RPC: %v", method, err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Result, out); err != nil {
		return errs.New(errs.Unavailable, "the node's answer to %s: %v", method, err)
	}
	return nil
}

// Forward sends body, one JSON-RPC request or batch, to the node and
// returns its answer.
func (u *Upstream) Forward(ctx context.Context, body []byte) (json.RawMessage, error) {
	timeout := u.Timeout
	if timeout == 0 {
		timeout = DefaultUpstreamTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.URL, bytes.NewReader(body))
	if err != nil {
		return nil, errs.New(errs.Internal, "the upstream's URL is not usable") // never quoted: it may carry a key
	}
	for name, vals := range u.Header {
		req.Header[name] = vals
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := u.client().Do(req)
	if err != nil {
		return nil, errs.New(errs.Unavailable, "the node did not answer: %v", bare(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxUpstreamBytes+1))
	switch {
	case err != nil:
		return nil, errs.New(errs.Unavailable, "reading the node's answer: %v", bare(err))
	case len(raw) > MaxUpstreamBytes:
		return nil, errs.New(errs.Unavailable, "the node answered more than %d bytes", MaxUpstreamBytes)
	case resp.StatusCode != http.StatusOK:
		return nil, errs.New(errs.Unavailable, "the node answered HTTP %d", resp.StatusCode)
	}
	return raw, nil
}

// client is the HTTP client calls go out with: u.Client's (or the
// default) transport, never following a redirect, which would carry the
// upstream's headers (its credentials) to wherever the node points.
func (u *Upstream) client() *http.Client {
	c := http.Client{Transport: transport}
	if u.Client != nil {
		c = *u.Client
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// transport is http.DefaultTransport keeping 16 idle connections to a
// node, not 2: eth_sendTransaction asks the node four things at once,
// and with 2 kept a busy endpoint opened a new connection for most calls.
var transport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	return t
}()

// bare is a transport error without the URL it names, which may carry a
// provider's key (user:password@, a path or a query): only what went
// wrong (refused, timed out).
func bare(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// call is a Call to run later, as fill runs several at once.
func (u *Upstream) call(out any, method string, params ...any) func(context.Context) error {
	return func(ctx context.Context) error { return u.Call(ctx, out, method, params...) }
}
