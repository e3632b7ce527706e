package ethrpc_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/sigil-hsm/sigil/internal/testutil/gethtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// devChain is geth --dev's chain ID; oneETH the keys' max_fee (eth_sendTransaction takes
// fees from the node only for a key with one).
const (
	devChain = 1337
	oneETH   = "1000000000000000000"
)

const nodePolicy = `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read, approvals.approve]
  - identity: spiffe://example.org/treasury
    keys: ["treasury-*"]
    allow: [eth.sign_tx, eth.sign_message, eth.sign_typed_data, keys.read]
approvals:
  - operation: eth.sign_tx
    keys: ["treasury-held"]
    when: {value_gte: "1000000000000000000"}
    approvers: [spiffe://example.org/ops]
    quorum: 1
`

// nodeEnv is a Sigil server with geth --dev behind its JSON-RPC
// endpoint, and the treasury's eth keys funded on it.
type nodeEnv struct {
	*servertest.MTLS
	node   *gethtest.Node
	rpcURL string
	client *http.Client
	addr   map[string]string
}

func newNodeEnv(t *testing.T, upstream *eth.Upstream) *nodeEnv {
	t.Helper()
	node := gethtest.Start(t)
	if upstream == nil {
		upstream = &eth.Upstream{URL: node.URL}
	}
	e := &nodeEnv{node: node, addr: map[string]string{}}
	e.MTLS = servertest.NewMTLS(t, nodePolicy, func(o *server.Options) { o.Settings = map[string]any{eth.Name: &eth.Settings{Upstream: upstream}} })
	e.rpcURL = "https://" + e.EthRPC
	ops := e.Client(t, "spiffe://example.org/ops")
	for id, p := range map[string]*sigilv1.EthPolicy{
		"treasury-1":      {ChainIds: []uint64{devChain}, MaxFee: oneETH},
		"treasury-capped": {ChainIds: []uint64{devChain}, DailyLimit: "2000000000000000000", MaxFee: oneETH},
		"treasury-held":   {ChainIds: []uint64{devChain}, MaxFee: oneETH},
		"treasury-nofee":  {ChainIds: []uint64{devChain}},
		"other-1":         {ChainIds: []uint64{devChain}, MaxFee: oneETH},
	} {
		if _, err := sigilv1.NewKeyServiceClient(ops).CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256K", Purpose: "eth", EthPolicy: p}); err != nil {
			t.Fatal(err)
		}
		a, err := sigilv1.NewEthereumServiceClient(ops).GetAddress(context.Background(), &sigilv1.GetAddressRequest{KeyId: id})
		if err != nil {
			t.Fatal(err)
		}
		e.addr[id] = strings.ToLower(a.GetAddress())
		node.Fund(t, a.GetAddress(), new(big.Int).Mul(big.NewInt(100), big.NewInt(1e18)))
	}
	cert := e.CA.Issue(t, "spiffe://example.org/treasury", false, time.Now().Add(time.Hour))
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool, Certificates: []tls.Certificate{cert}}}}
	return e
}

type rpcAnswer struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	} `json:"error"`
}

func (e *nodeEnv) rpc(t *testing.T, method string, params ...any) rpcAnswer {
	t.Helper()
	if params == nil {
		params = []any{}
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
	resp, err := e.client.Post(e.rpcURL, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a rpcAnswer
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%s: %s", method, raw)
	}
	return a
}

func (e *nodeEnv) nonce(t *testing.T, addr string) uint64 {
	var n hexutil.Uint64
	if err := e.node.Call(t, &n, "eth_getTransactionCount", addr, "latest"); err != nil {
		t.Fatal(err)
	}
	return uint64(n)
}

// With geth --dev behind it, the endpoint is the node to a wallet: the
// node's reads are forwarded, eth_sendTransaction fills, signs, submits
// and answers the hash of a transaction mined from Sigil's address, and
// the node's account and admin methods are never forwarded.
func TestSendTransactionThroughARealNode(t *testing.T) {
	e := newNodeEnv(t, nil)
	if a := e.rpc(t, "eth_chainId"); a.Error != nil || string(a.Result) != `"0x539"` {
		t.Fatalf("eth_chainId: %s %+v", a.Result, a.Error)
	}
	if a := e.rpc(t, "eth_blockNumber"); a.Error != nil {
		t.Fatalf("eth_blockNumber: %+v", a.Error)
	}
	for _, m := range []string{"admin_peers", "personal_unlockAccount", "debug_traceTransaction", "miner_start", "eth_coinbase"} {
		if a := e.rpc(t, m); a.Error == nil || a.Error.Code != -32601 {
			t.Errorf("%s forwarded: %s %+v", m, a.Result, a.Error)
		}
	}
	to := "0x3535353535353535353535353535353535353535"
	a := e.rpc(t, "eth_sendTransaction", map[string]any{"from": e.addr["treasury-1"], "to": to, "value": "0xde0b6b3a7640000"})
	if a.Error != nil {
		t.Fatalf("eth_sendTransaction: %+v", a.Error)
	}
	var hash string
	json.Unmarshal(a.Result, &hash)
	r := e.node.Receipt(t, hash)
	if r["from"] != e.addr["treasury-1"] || r["status"] != "0x1" {
		t.Fatalf("receipt: %v", r)
	}
	log, _ := os.ReadFile(e.AuditLog)
	if !strings.Contains(string(log), `"reason":"submitted to the node: 0x`) {
		t.Error("the audit record of the send does not say it was submitted")
	}
	// personal_sign with web3.js's password parameter.
	if a := e.rpc(t, "personal_sign", "0x6869", e.addr["treasury-1"], "ignored password"); a.Error != nil || len(a.Result) < 130 {
		t.Errorf("personal_sign with a password: %s %+v", a.Result, a.Error)
	}
}

// Twenty concurrent sends from one key take twenty consecutive nonces,
// all mined.
func TestConcurrentSendsTakeConsecutiveNonces(t *testing.T) {
	e := newNodeEnv(t, nil)
	from := e.addr["treasury-1"]
	start := e.nonce(t, from)
	var wg sync.WaitGroup
	hashes := make([]string, 20)
	errs := make([]error, 20)
	for i := range hashes {
		wg.Go(func() {
			a := e.rpc(t, "eth_sendTransaction", map[string]any{"from": from, "to": "0x3535353535353535353535353535353535353535", "value": hexutil.EncodeUint64(uint64(i + 1))})
			if a.Error != nil {
				errs[i] = fmt.Errorf("%d %s", a.Error.Code, a.Error.Message)
				return
			}
			json.Unmarshal(a.Result, &hashes[i])
		})
	}
	wg.Wait()
	var nonces []int
	for i, h := range hashes {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		e.node.Receipt(t, h)
		var tx struct {
			Nonce hexutil.Uint64 `json:"nonce"`
		}
		if err := e.node.Call(t, &tx, "eth_getTransactionByHash", h); err != nil {
			t.Fatal(err)
		}
		nonces = append(nonces, int(tx.Nonce))
	}
	sort.Ints(nonces)
	for i, n := range nonces {
		if uint64(n) != start+uint64(i) {
			t.Fatalf("nonces %v from %d", nonces, start)
		}
	}
}

// The policy holds over eth_sendTransaction: past the daily limit it is
// refused with 4100 and nothing reaches the node; a held transfer is
// submitted, once, by the run that follows its approval.
func TestPolicyOverSendTransaction(t *testing.T) {
	e := newNodeEnv(t, nil)
	capped := e.addr["treasury-capped"]
	before := e.nonce(t, capped)
	a := e.rpc(t, "eth_sendTransaction", map[string]any{"from": capped, "to": "0x3535353535353535353535353535353535353535", "value": "0x3782dace9d900000"}) // 4 ETH
	if a.Error == nil || a.Error.Code != 4100 {
		t.Fatalf("over the daily limit: %s %+v", a.Result, a.Error)
	}
	var pending hexutil.Uint64
	e.node.Call(t, &pending, "eth_getTransactionCount", capped, "pending")
	if uint64(pending) != before {
		t.Fatalf("a refused transaction reached the node: pending %d, was %d", pending, before)
	}
	held := e.addr["treasury-held"]
	heldBefore := e.nonce(t, held)
	a = e.rpc(t, "eth_sendTransaction", map[string]any{"from": held, "to": "0x3535353535353535353535353535353535353535", "value": "0x1bc16d674ec80000"}) // 2 ETH
	if a.Error == nil || a.Error.Code != -32002 {
		t.Fatalf("a held transfer: %s %+v", a.Result, a.Error)
	}
	var data struct {
		ApprovalID string `json:"approval_id"`
	}
	json.Unmarshal(a.Error.Data, &data)
	approvals := sigilv1.NewApprovalServiceClient(e.Client(t, "spiffe://example.org/ops"))
	got, err := approvals.GetApproval(context.Background(), &sigilv1.GetApprovalRequest{ApprovalId: data.ApprovalID})
	if err != nil {
		t.Fatal(err)
	}
	ran, err := approvals.Approve(context.Background(), &sigilv1.ApproveRequest{ApprovalId: data.ApprovalID, PayloadSha256: got.GetApproval().GetPayloadSha256()})
	if err != nil || ran.GetApproval().GetState() != "done" {
		t.Fatalf("approving: %v %v", ran, err)
	}
	var resp sigilv1.SignTransactionResponse
	requester := sigilv1.NewApprovalServiceClient(e.Client(t, "spiffe://example.org/treasury"))
	res, err := requester.GetApprovalResult(context.Background(), &sigilv1.GetApprovalResultRequest{ApprovalId: data.ApprovalID})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.GetResult().UnmarshalTo(&resp); err != nil || !resp.GetSubmitted() {
		t.Fatalf("the approved run's result: %v %v", &resp, err)
	}
	r := e.node.Receipt(t, resp.GetHash())
	if r["from"] != held {
		t.Fatalf("receipt: %v", r)
	}
	if n := e.nonce(t, held); n != heldBefore+1 {
		t.Errorf("the held transfer was mined %d times", n-heldBefore)
	}
}

// A node that hangs, or answers more than MaxUpstreamBytes, fails the
// call within the upstream's deadline and limit.
func TestUpstreamThatHangsOrFloods(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), "eth_blockNumber") {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		w.Write([]byte(`{"jsonrpc":"2.0","id":7,"result":"`))
		w.Write(bytes.Repeat([]byte("a"), 10<<20))
		w.Write([]byte(`"}`))
	}))
	t.Cleanup(bad.Close)
	e := newNodeEnv(t, &eth.Upstream{URL: bad.URL, Timeout: time.Second})
	start := time.Now()
	if a := e.rpc(t, "eth_blockNumber"); a.Error == nil || a.Error.Code != -32603 {
		t.Errorf("a node that hangs: %+v", a.Error)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a node that hangs took %v to fail", took)
	}
	if a := e.rpc(t, "eth_gasPrice"); a.Error == nil || !strings.Contains(a.Error.Message, "more than") {
		t.Errorf("a node answering 10 MB: %+v", a.Error)
	}
}
