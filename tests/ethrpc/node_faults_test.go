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
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/sigil-hsm/sigil/internal/testutil/gethtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// The faults a hostile review found in eth_sendTransaction, each a row
// that failed before its fix.

func passAll(string, []byte, http.ResponseWriter) bool { return false }

func (e *nodeEnv) pending(t *testing.T, addr string) uint64 {
	t.Helper()
	var n hexutil.Uint64
	if err := e.node.Call(t, &n, "eth_getTransactionCount", addr, "pending"); err != nil {
		t.Fatal(err)
	}
	return uint64(n)
}

// newFundedKey makes eth key id (chain devChain, max fee 1 ETH), funds it
// and returns its address, lower case.
func (e *nodeEnv) newFundedKey(t *testing.T, id string) string {
	t.Helper()
	ops := e.Client(t, "spiffe://example.org/ops")
	if _, err := sigilv1.NewKeyServiceClient(ops).CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256K", Purpose: "eth",
		EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{devChain}, MaxFee: oneETH}}); err != nil {
		t.Fatal(err)
	}
	a, err := sigilv1.NewEthereumServiceClient(ops).GetAddress(context.Background(), &sigilv1.GetAddressRequest{KeyId: id})
	if err != nil {
		t.Fatal(err)
	}
	e.node.Fund(t, a.GetAddress(), new(big.Int).Mul(big.NewInt(100), big.NewInt(1e18)))
	return strings.ToLower(a.GetAddress())
}

func (e *nodeEnv) send(t *testing.T, from, value string) rpcAnswer {
	t.Helper()
	return e.rpc(t, "eth_sendTransaction", map[string]any{"from": from, "to": "0x3535353535353535353535353535353535353535", "value": value})
}

// A submission the node refuses leaves its nonce signed and missing: the
// next send is refused (it would wait behind the hole, unmined, and
// execute with every retry once the hole is filled), with the missing
// transaction's bytes; resubmitted, they fill it and sends go on.
func TestSendRefusedWhileANonceIsMissing(t *testing.T) {
	e, hn := newHookedEnv(t)
	from := e.newFundedKey(t, "treasury-hole")
	if a := e.send(t, from, "0x1"); a.Error != nil {
		t.Fatal(a.Error)
	}
	hn.set(func(m string, _ []byte, w http.ResponseWriter) bool {
		if m != "eth_sendRawTransaction" {
			return false
		}
		w.Write([]byte(`{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"txpool is full"}}`))
		return true
	})
	if a := e.send(t, from, "0x2"); a.Error == nil || !strings.Contains(a.Error.Message, "txpool is full") {
		t.Fatalf("a refused submission: %+v", a)
	}
	hn.set(passAll)
	a := e.send(t, from, "0x3")
	var hole struct{ Nonce, Hash, Raw string }
	if a.Error == nil || a.Error.Code != -32000 || json.Unmarshal(a.Error.Data, &hole) != nil || hole.Nonce != "0x1" || hole.Raw == "" {
		t.Fatalf("a send behind the missing nonce 1: %+v", a)
	}
	if r := e.rpc(t, "eth_sendRawTransaction", hole.Raw); r.Error != nil || strings.Trim(string(r.Result), `"`) != hole.Hash {
		t.Fatalf("resubmitting the missing transaction: %+v (want hash %s)", r, hole.Hash)
	}
	a = e.send(t, from, "0x4")
	if a.Error != nil {
		t.Fatalf("a send once the hole is filled: %+v", a.Error)
	}
	var hash string
	json.Unmarshal(a.Result, &hash)
	if r := e.node.Receipt(t, hash); r["status"] != "0x1" || e.nonce(t, from) != 3 {
		t.Fatalf("mined: receipt %v, nonce %d (want 3)", r, e.nonce(t, from))
	}
}

// A node counting transactions a key never signed is not believed: the
// key's real nonces stay reachable.
func TestLyingNodeCannotRatchetTheNonce(t *testing.T) {
	e, hn := newHookedEnv(t)
	from := e.newFundedKey(t, "treasury-ratchet")
	lie := func(n uint64) {
		hn.set(func(m string, _ []byte, w http.ResponseWriter) bool {
			if m != "eth_getTransactionCount" {
				return false
			}
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":1,"result":"%s"}`, hexutil.EncodeUint64(n))
			return true
		})
	}
	lie(64)
	if a := e.send(t, from, "0x1"); a.Error == nil || !strings.Contains(a.Error.Message, "never signed") {
		t.Fatalf("a fresh key the node says sent 64: %+v", a)
	}
	hn.set(passAll)
	if a := e.send(t, from, "0x1"); a.Error != nil {
		t.Fatalf("the honest node: %+v", a.Error)
	}
	pastTaken() // else the send the node just took stands in for its count
	lie(10)
	if a := e.send(t, from, "0x1"); a.Error == nil || !strings.Contains(a.Error.Message, "signed only up to 0") {
		t.Fatalf("a node counting past what the key signed: %+v", a)
	}
	hn.set(passAll)
	if a := e.send(t, from, "0x1"); a.Error != nil || e.pending(t, from) != 2 {
		t.Fatalf("the honest node again: %+v, pending %d", a.Error, e.pending(t, from))
	}
}

// pastTaken waits until the key's last send the node took no longer
// stands in for the node's pending count, so the next send asks it.
func pastTaken() { time.Sleep(eth.TakenMaxAge) }

// The node's pending count lags what it took while it takes a block in
// (geth recounts the account), and behind a provider's load balancer: a
// send right after one the node took does not ask it; later, a count one
// behind is believed only as far as the transaction it misses is
// missing, and here the node has it.
func TestLaggingCountIsNotAHole(t *testing.T) {
	e, hn := newHookedEnv(t)
	from := e.newFundedKey(t, "treasury-lag")
	var asked atomic.Int32
	lag := func(m string, _ []byte, w http.ResponseWriter) bool {
		if m != "eth_getTransactionCount" {
			return false
		}
		asked.Add(1)
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":1,"result":"%s"}`, hexutil.EncodeUint64(max(e.pending(t, from), 1)-1))
		return true
	}
	if a := e.send(t, from, "0x1"); a.Error != nil {
		t.Fatal(a.Error)
	}
	hn.set(lag)
	took := time.Now()
	if a := e.send(t, from, "0x2"); a.Error != nil {
		t.Fatalf("a send right after one the node took: %+v", a.Error)
	}
	if n := asked.Load(); n != 0 && time.Since(took) < eth.TakenMaxAge {
		t.Errorf("a send within TakenMaxAge of the last one the node took asked the node's count %d times", n)
	}
	pastTaken()
	a := e.send(t, from, "0x3")
	if a.Error != nil {
		t.Fatalf("a send when the node's count lags one behind what it has: %+v", a.Error)
	}
	if asked.Load() == 0 {
		t.Fatal("the node's count was not asked after TakenMaxAge")
	}
	hn.set(passAll)
	var hash string
	json.Unmarshal(a.Result, &hash)
	if r := e.node.Receipt(t, hash); r["status"] != "0x1" || e.nonce(t, from) != 3 {
		t.Fatalf("mined: receipt %v, nonce %d (want 3)", r, e.nonce(t, from))
	}
}

// A transaction the node said it took and then dropped is found within
// TakenMaxAge of the last time the node's count was read, however often
// the key sends (found by a hostile review: every send the node took
// renewed the window, so a key sending faster than that never asked
// again and stacked every send behind the hole).
func TestDroppedTransactionFoundThoughTheKeySendsOften(t *testing.T) {
	e, hn := newHookedEnv(t)
	from := e.newFundedKey(t, "treasury-slide")
	if a := e.send(t, from, "0x1"); a.Error != nil {
		t.Fatal(a.Error)
	}
	hn.set(func(m string, body []byte, w http.ResponseWriter) bool { // says it took nonce 1, and drops it
		if m != "eth_sendRawTransaction" {
			return false
		}
		var req struct{ Params []string }
		json.Unmarshal(body, &req)
		raw, _ := hexutil.Decode(req.Params[0])
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":1,"result":"%s"}`, crypto.Keccak256Hash(raw).Hex())
		return true
	})
	if a := e.send(t, from, "0x2"); a.Error != nil {
		t.Fatal(a.Error)
	}
	hn.set(passAll)
	start := time.Now()
	for sent := 0; ; sent++ {
		time.Sleep(eth.TakenMaxAge / 3)
		a := e.send(t, from, "0x3")
		if a.Error != nil && a.Error.Code == -32000 && strings.Contains(a.Error.Message, "does not have it") {
			break // found
		}
		if a.Error != nil {
			t.Fatalf("send %d: %+v", sent, a.Error)
		}
		if time.Since(start) > 5*eth.TakenMaxAge {
			t.Fatalf("%d sends over %v stacked behind the dropped nonce 1; none was refused", sent+1, time.Since(start))
		}
	}
}

// A batch's answers are bounded whole, a node's error data (revert data)
// included.
func TestBatchErrorDataIsBounded(t *testing.T) {
	e := newNodeEnv(t, nil)
	call := `{"jsonrpc":"2.0","id":%d,"method":"eth_call","params":[{"from":"0x3535353535353535353535353535353535353535","data":"0x623f00006000fd"},"latest"]}` // REVERT with ~4 MB
	var parts []string
	for i := range 4 {
		parts = append(parts, fmt.Sprintf(call, i))
	}
	resp, err := e.client.Post(e.rpcURL, "application/json", strings.NewReader("["+strings.Join(parts, ",")+"]"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(body) > eth.MaxUpstreamBytes+4096 || !bytes.Contains(body, []byte("-32005")) {
		t.Fatalf("4 reverts of ~4 MB each answered %d bytes (bound %d)", len(body), eth.MaxUpstreamBytes)
	}
}

// A caller past its quota costs the node nothing.
func TestThrottledSendDoesNotReachTheNode(t *testing.T) {
	hn := &hookNode{}
	proxy := httptest.NewServer(hn)
	t.Cleanup(proxy.Close)
	var asked atomic.Int32
	hn.set(func(string, []byte, http.ResponseWriter) bool { asked.Add(1); return false })
	e := &nodeEnv{addr: map[string]string{}}
	e.node = gethtest.Start(t)
	hn.geth = e.node.URL
	e.MTLS = servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/treasury
    keys: ["treasury-*"]
    allow: [eth.sign_tx]
    rate: 1/m
`, func(o *server.Options) {
		o.Settings = map[string]any{eth.Name: &eth.Settings{Upstream: &eth.Upstream{URL: proxy.URL}}}
	})
	e.rpcURL = "https://" + e.EthRPC
	from := e.newFundedKey(t, "treasury-q")
	cert := e.CA.Issue(t, "spiffe://example.org/treasury", false, time.Now().Add(time.Hour))
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool, Certificates: []tls.Certificate{cert}}}}
	for range 5 { // spend the burst, whatever it is
		e.send(t, from, "0x1")
	}
	before := asked.Load()
	for range 10 {
		if a := e.send(t, from, "0x1"); a.Error == nil || a.Error.Code != -32005 {
			t.Fatalf("a throttled send: %+v", a)
		}
	}
	if n := asked.Load() - before; n != 0 {
		t.Fatalf("10 throttled sends asked the node %d things", n)
	}
}

// A caller that goes away while its signed transaction is on the way to
// the node does not take the submission with it.
func TestCallerGoneMidSubmissionStillSubmits(t *testing.T) {
	e, hn := newHookedEnv(t)
	from := e.newFundedKey(t, "treasury-gone")
	submitting := make(chan struct{}, 1)
	hn.set(func(m string, _ []byte, _ http.ResponseWriter) bool {
		if m == "eth_sendRawTransaction" {
			select {
			case submitting <- struct{}{}:
			default:
			}
			time.Sleep(500 * time.Millisecond) // a slow link
		}
		return false
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-submitting; cancel() }()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction", "params": []any{map[string]any{"from": from, "to": "0x3535353535353535353535353535353535353535", "value": "0x1"}}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.rpcURL, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if _, err := e.client.Do(req); err == nil {
		t.Fatal("the caller's request was not cut short")
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.pending(t, from) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the transaction of a caller gone mid-submission never reached the node")
		}
		time.Sleep(100 * time.Millisecond)
	}
	hn.set(passAll)
	if a := e.send(t, from, "0x2"); a.Error != nil {
		t.Fatalf("the next send: %+v", a.Error)
	}
}

// One wrong eth_chainId answer is not believed for long.
func TestWrongChainIDIsNotKept(t *testing.T) {
	e, hn := newHookedEnv(t)
	from := e.newFundedKey(t, "treasury-chain")
	var once atomic.Bool
	hn.set(func(m string, _ []byte, w http.ResponseWriter) bool {
		if m != "eth_chainId" || once.Swap(true) {
			return false
		}
		w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":"0x1"}`))
		return true
	})
	time.Sleep(eth.ChainMaxAge) // what an earlier test cached is stale
	if a := e.send(t, from, "0x1"); a.Error == nil {
		t.Fatal("a send on the node's wrong chain 1 was signed")
	}
	time.Sleep(eth.ChainMaxAge)
	if a := e.send(t, from, "0x1"); a.Error != nil {
		t.Fatalf("a send once the wrong chain ID is stale: %+v", a.Error)
	}
}
