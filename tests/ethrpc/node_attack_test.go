package ethrpc_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sigil-hsm/sigil/purpose/eth"
)

// hookNode sits between Sigil and geth --dev: a hook may answer a
// method itself, as a malicious or failing node would.
type hookNode struct {
	geth string
	hook atomic.Pointer[func(method string, body []byte, w http.ResponseWriter) bool]
}

func (h *hookNode) set(f func(method string, body []byte, w http.ResponseWriter) bool) {
	h.hook.Store(&f)
}

func (h *hookNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var m struct {
		Method string `json:"method"`
	}
	json.Unmarshal(body, &m)
	if f := h.hook.Load(); f != nil && (*f)(m.Method, body, w) {
		return
	}
	resp, err := http.Post(h.geth, "application/json", bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	io.Copy(w, resp.Body)
}

// newHookedEnv is a nodeEnv whose upstream is a hookNode before geth.
func newHookedEnv(t *testing.T) (*nodeEnv, *hookNode) {
	hn := &hookNode{}
	proxy := httptest.NewServer(hn)
	t.Cleanup(proxy.Close)
	e := newNodeEnv(t, &eth.Upstream{URL: proxy.URL})
	hn.geth = e.node.URL
	return e, hn
}

// A malicious or failing node: rows of what it answers and what Sigil
// must do anyway.
func TestNodeAttackSuite(t *testing.T) {
	e, hn := newHookedEnv(t)
	send := func(from string, extra map[string]any) rpcAnswer {
		tx := map[string]any{"from": from, "to": "0x3535353535353535353535353535353535353535", "value": "0x1"}
		for k, v := range extra {
			tx[k] = v
		}
		return e.rpc(t, "eth_sendTransaction", tx)
	}
	t.Run("a transaction is on the audit record before it reaches the node", func(t *testing.T) {
		var recorded atomic.Bool
		hn.set(func(m string, _ []byte, _ http.ResponseWriter) bool {
			if m == "eth_sendRawTransaction" {
				log, _ := os.ReadFile(e.AuditLog)
				recorded.Store(strings.Contains(string(log), `"operation":"eth.sign_tx"`))
			}
			return false
		})
		defer hn.set(func(string, []byte, http.ResponseWriter) bool { return false })
		if a := send(e.addr["treasury-1"], nil); a.Error != nil {
			t.Fatal(a.Error)
		}
		if !recorded.Load() {
			t.Error("the signed transaction reached the node before its audit record was written")
		}
	})
	t.Run("a node's answer carries the caller's id, nothing more", func(t *testing.T) {
		hn.set(func(m string, _ []byte, w http.ResponseWriter) bool {
			if m != "eth_blockNumber" {
				return false
			}
			w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":"0x1","extra":"smuggled"}`))
			return true
		})
		resp, err := e.client.Post(e.rpcURL, "application/json", strings.NewReader(`[{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]},{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","params":[]}]`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var answers []map[string]json.RawMessage
		if json.Unmarshal(body, &answers) != nil || len(answers) != 2 || string(answers[1]["id"]) != "2" || answers[1]["extra"] != nil {
			t.Errorf("a forwarded batch's answers: %s", body)
		}
	})
	t.Run("a node's pending count far past the key's refuses, and leaves the key usable", func(t *testing.T) {
		pastTaken()
		hn.set(func(m string, body []byte, w http.ResponseWriter) bool {
			if m != "eth_getTransactionCount" {
				return false
			}
			w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":"0xf4240"}`))
			return true
		})
		if a := send(e.addr["treasury-1"], nil); a.Error == nil || !strings.Contains(a.Error.Message, "give the nonce yourself") {
			t.Errorf("a pending count of 1000000: %s %+v", a.Result, a.Error)
		}
		hn.set(func(string, []byte, http.ResponseWriter) bool { return false })
		if a := send(e.addr["treasury-1"], nil); a.Error != nil {
			t.Errorf("the next send, the node honest again: %+v", a.Error)
		}
	})
	t.Run("a node refusing a signed transaction: its hash and bytes come back", func(t *testing.T) {
		hn.set(func(m string, _ []byte, w http.ResponseWriter) bool {
			if m != "eth_sendRawTransaction" {
				return false
			}
			w.Write([]byte(`{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"txpool is full"}}`))
			return true
		})
		defer hn.set(func(string, []byte, http.ResponseWriter) bool { return false })
		a := send(e.addr["treasury-1"], nil)
		var data struct{ Hash, Raw string }
		if a.Error == nil || a.Error.Code != -32000 || json.Unmarshal(a.Error.Data, &data) != nil || len(data.Hash) != 66 || len(data.Raw) < 100 {
			t.Errorf("a refused submission: %+v", a.Error)
		}
	})
	t.Run("fees are not taken from the node for a key without max_fee", func(t *testing.T) {
		if a := send(e.addr["treasury-nofee"], nil); a.Error == nil || !strings.Contains(a.Error.Message, "max_fee") {
			t.Errorf("a key without max_fee: %s %+v", a.Result, a.Error)
		}
		// What a transaction may burn is gas × fee cap: the gas is the
		// caller's to give too.
		if a := send(e.addr["treasury-nofee"], map[string]any{"maxFeePerGas": "0x174876e800", "maxPriorityFeePerGas": "0x3b9aca00"}); a.Error == nil || !strings.Contains(a.Error.Message, "give gas") {
			t.Errorf("the same key, fees given but no gas: %s %+v", a.Result, a.Error)
		}
		if a := send(e.addr["treasury-nofee"], map[string]any{"gas": "0x5208", "maxFeePerGas": "0x174876e800", "maxPriorityFeePerGas": "0x3b9aca00"}); a.Error != nil {
			t.Errorf("the same key, fees and gas given: %+v", a.Error)
		}
	})
	t.Run("a key the caller may not use answers as an address no key has", func(t *testing.T) {
		var asked atomic.Int32
		hn.set(func(string, []byte, http.ResponseWriter) bool { asked.Add(1); return false })
		defer hn.set(func(string, []byte, http.ResponseWriter) bool { return false })
		other := e.rpc(t, "eth_sendTransaction", map[string]any{"from": e.addr["other-1"], "to": "0x3535353535353535353535353535353535353535", "chainId": "0x1"})
		none := e.rpc(t, "eth_sendTransaction", map[string]any{"from": "0x1111111111111111111111111111111111111111", "to": "0x3535353535353535353535353535353535353535", "chainId": "0x1"})
		if other.Error == nil || none.Error == nil || other.Error.Code != none.Error.Code || other.Error.Message != none.Error.Message || asked.Load() != 0 {
			t.Errorf("another's key %+v, no key %+v, node asked %d times", other.Error, none.Error, asked.Load())
		}
	})
}
