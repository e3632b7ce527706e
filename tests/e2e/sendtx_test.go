package e2e_test

import (
	"encoding/json"
	"math/big"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/testutil/gethtest"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// `sigil eth send-tx` against a dev server with geth --dev behind it:
// the nonce, gas and fees are filled from the node, the transaction is
// mined from the key's address, and a second send takes the next nonce.
// A "from" that is not the key's is refused before anything is signed.
func TestEthSendTxCLI(t *testing.T) {
	framework.RequireTools(t)
	node := gethtest.Start(t)
	bin := framework.Build(t)
	data := filepath.Join(t.TempDir(), ".sigil-dev")
	srv := framework.Serve(t, bin, []string{"--dev", "--data-dir", data, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--ethrpc-addr", "127.0.0.1:0", "--ethrpc-upstream", node.URL}, nil)
	defer srv.Stop(t)
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append(args, "--data-dir", data)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := cli("keys", "create", "treasury", "--alg", "ES256K", "--purpose", "eth", "--chain-ids", "1337", "--max-fee", "1000000000000000000"); err != nil {
		t.Fatalf("keys create: %v %s", err, out)
	}
	addr, err := cli("eth", "address", "--key", "treasury")
	if err != nil {
		t.Fatalf("eth address: %v %s", err, addr)
	}
	node.Fund(t, addr, big.NewInt(1e18))
	for nonce := 0; nonce < 2; nonce++ {
		out, err := cli("eth", "send-tx", "--key", "treasury", "--tx", `{"to":"0x3535353535353535353535353535353535353535","value":"0x2a"}`, "--json")
		if err != nil {
			t.Fatalf("send-tx: %v %s", err, out)
		}
		var sent struct{ Hash, From string }
		if err := json.Unmarshal([]byte(out), &sent); err != nil || sent.From != addr {
			t.Fatalf("send-tx printed %s (%v)", out, err)
		}
		r := node.Receipt(t, sent.Hash)
		if !strings.EqualFold(r["from"].(string), addr) || r["status"] != "0x1" {
			t.Fatalf("receipt: %v", r)
		}
		var tx struct{ Nonce string }
		node.Call(t, &tx, "eth_getTransactionByHash", sent.Hash)
		if want := []string{"0x0", "0x1"}[nonce]; tx.Nonce != want {
			t.Fatalf("send %d took nonce %s", nonce, tx.Nonce)
		}
	}
	out, err := cli("eth", "send-tx", "--key", "treasury", "--tx", `{"from":"0x3535353535353535353535353535353535353535","to":"0x3535353535353535353535353535353535353535","value":"0x1"}`)
	if err == nil || !strings.Contains(out, "is not key") {
		t.Fatalf("a foreign from: %v %s", err, out)
	}
	b, err := exec.Command(bin, "eth", "send-tx", "--key", "treasury", "--tx", `{"to":"0x3535353535353535353535353535353535353535"}`, "--addr", "127.0.0.1:1", "--tls-cert", "x", "--tls-key", "x", "--tls-ca", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(b), "--ethrpc") {
		t.Fatalf("no endpoint: %v %s", err, b)
	}
}
