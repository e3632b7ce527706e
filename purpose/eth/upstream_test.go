package eth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// An upstream's URL may carry a provider's key (user:password@, a path,
// a query): no error quotes it.
func TestUpstreamErrorsDoNotQuoteTheURL(t *testing.T) {
	for _, raw := range []string{"http://project:s3cretpass@127.0.0.1:1/v3/PATHKEY?apikey=QUERYKEY", "HTTP://127.0.0.1:1/v3/PATHKEY?apikey=QUERYKEY"} {
		err := (&Upstream{URL: raw, Timeout: time.Second}).Call(context.Background(), nil, "eth_blockNumber")
		if err == nil {
			t.Fatal("a node that is not there answered")
		}
		for _, secret := range []string{"s3cretpass", "PATHKEY", "QUERYKEY"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error quotes %q: %v", secret, err)
			}
		}
	}
}

// A node answering with a redirect does not get the upstream's headers
// (its credentials) sent on to wherever it points.
func TestUpstreamFollowsNoRedirect(t *testing.T) {
	stolen := make(chan string, 1)
	thief := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { stolen <- r.Header.Get("X-Api-Key") }))
	defer thief.Close()
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, thief.URL, http.StatusTemporaryRedirect)
	}))
	defer node.Close()
	err := (&Upstream{URL: node.URL, Header: http.Header{"X-Api-Key": {"PROVIDERKEY"}}, Timeout: 2 * time.Second}).Call(context.Background(), nil, "eth_blockNumber")
	select {
	case k := <-stolen:
		t.Fatalf("the redirect target got the header %q", k)
	default:
	}
	if err == nil || !strings.Contains(err.Error(), "307") {
		t.Errorf("a redirect: %v", err)
	}
}

// fakeNode answers the calls fill makes, counting each method, with the
// base fee (none: a chain without EIP-1559) baseFee holds.
func fakeNode(t *testing.T, baseFee *atomic.Value) (*Upstream, *sync.Map) {
	counts := &sync.Map{}
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		n, _ := counts.LoadOrStore(req.Method, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		result := map[string]any{"eth_chainId": "0x539", "eth_getTransactionCount": "0x7", "eth_estimateGas": "0x5208",
			"eth_maxPriorityFeePerGas": "0x3b9aca00", "eth_gasPrice": "0x4a817c800"}[req.Method]
		if req.Method == "eth_getBlockByNumber" {
			head := map[string]any{"number": "0x1"}
			if fee := baseFee.Load().(string); fee != "" {
				head["baseFeePerGas"] = fee
			}
			result = head
		}
		json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
	}))
	t.Cleanup(node.Close)
	return &Upstream{URL: node.URL, Timeout: 5 * time.Second}, counts
}

func count(m *sync.Map, method string) int64 {
	n, ok := m.Load(method)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// A fee suggestion is reused for FeeMaxAge, then asked again; the nonce
// and gas are asked for every transaction.
func TestFillReusesAFeeSuggestionForItsAge(t *testing.T) {
	var baseFee atomic.Value
	baseFee.Store("0x64") // 100 wei
	u, counts := fakeNode(t, &baseFee)
	h := &rpcHandler{node: u}
	fill := func() map[string]json.RawMessage {
		t.Helper()
		obj := map[string]json.RawMessage{"from": json.RawMessage(`"0x3535353535353535353535353535353535353535"`), "to": json.RawMessage(`"0x3535353535353535353535353535353535353536"`)}
		chain, pending, err := h.fill(context.Background(), obj, obj["from"], true)
		if err != nil {
			t.Fatal(err)
		}
		if chain.Int64() != 1337 || pending != 7 || string(obj["gas"]) != `"0x5208"` {
			t.Fatalf("filled chain %v, pending %d, gas %s", chain, pending, obj["gas"])
		}
		return obj
	}
	first := fill()
	baseFee.Store("0x1000")
	second := fill()
	if string(second["maxFeePerGas"]) != string(first["maxFeePerGas"]) || count(counts, "eth_getBlockByNumber") != 1 || count(counts, "eth_maxPriorityFeePerGas") != 1 {
		t.Fatalf("a fresh suggestion was not reused: fee caps %s then %s, blocks asked %d", first["maxFeePerGas"], second["maxFeePerGas"], count(counts, "eth_getBlockByNumber"))
	}
	if count(counts, "eth_getTransactionCount") != 2 || count(counts, "eth_estimateGas") != 2 || count(counts, "eth_chainId") != 1 {
		t.Fatalf("nonce asked %d times, gas %d, chain %d", count(counts, "eth_getTransactionCount"), count(counts, "eth_estimateGas"), count(counts, "eth_chainId"))
	}
	old := *u.fees.Load()
	old.at = old.at.Add(-FeeMaxAge)
	u.fees.Store(&old)
	third := fill()
	if want := `"0x` + fmt.Sprintf("%x", 2*0x1000+0x3b9aca00) + `"`; string(third["maxFeePerGas"]) != want || count(counts, "eth_getBlockByNumber") != 2 {
		t.Fatalf("an aged suggestion: fee cap %s, want %s", third["maxFeePerGas"], want)
	}
	// A suggestion from the future (the clock stepped back) is not fresh.
	future := *u.fees.Load()
	future.at = time.Now().Add(time.Hour)
	u.fees.Store(&future)
	fill()
	if count(counts, "eth_getBlockByNumber") != 3 {
		t.Fatal("a suggestion dated in the future was reused")
	}
}

// On a chain without base fees the gas price is asked and reused too.
func TestFillLegacyChainUsesGasPrice(t *testing.T) {
	var baseFee atomic.Value
	baseFee.Store("")
	u, counts := fakeNode(t, &baseFee)
	h := &rpcHandler{node: u}
	for i := 0; i < 2; i++ {
		obj := map[string]json.RawMessage{"from": json.RawMessage(`"0x3535353535353535353535353535353535353535"`), "gas": json.RawMessage(`"0x5208"`)}
		if _, _, err := h.fill(context.Background(), obj, obj["from"], false); err != nil {
			t.Fatal(err)
		}
		if string(obj["gasPrice"]) != `"0x4a817c800"` || obj["maxFeePerGas"] != nil {
			t.Fatalf("legacy fees: %v", obj)
		}
	}
	if count(counts, "eth_gasPrice") != 1 || count(counts, "eth_estimateGas") != 0 || count(counts, "eth_getTransactionCount") != 0 {
		t.Fatalf("gas price asked %d times, gas %d, nonce %d", count(counts, "eth_gasPrice"), count(counts, "eth_estimateGas"), count(counts, "eth_getTransactionCount"))
	}
}
