package ethrpc_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/testutil/crosscheck"
)

// viem, ethers v6 and web3.js, pointed at Sigil's endpoint with geth
// --dev behind it as if it were the node (the client certificate their
// only setting): each sends through eth_sendTransaction, viem also
// deploys an ERC-20 and transfers with it, web3.js also signs with
// personal.sign's password parameter; every transaction is mined from
// Sigil's address.
func TestWalletLibrariesSendThroughSigil(t *testing.T) {
	crosscheck.Require(t)
	e := newNodeEnv(t, nil)
	cert, key, ca := e.CA.WriteClient(t, t.TempDir(), "spiffe://example.org/treasury")
	token, _ := filepath.Abs(filepath.Join("testdata", "test-token.json"))
	for _, lib := range []string{"viem", "ethers", "web3"} {
		t.Run(lib, func(t *testing.T) {
			out := crosscheck.Run(t, "wallets.mjs", lib, e.rpcURL, e.addr["treasury-1"], cert, key, ca, token)
			var txs []struct{ Hash, From, Status string }
			if err := json.Unmarshal(out, &txs); err != nil || len(txs) == 0 {
				t.Fatalf("%s: %s %v", lib, out, err)
			}
			for _, tx := range txs {
				r := e.node.Receipt(t, tx.Hash)
				if r["from"] != e.addr["treasury-1"] || r["status"] != "0x1" || !strings.EqualFold(tx.From, e.addr["treasury-1"]) {
					t.Errorf("%s: transaction %s: receipt %v", lib, tx.Hash, r)
				}
			}
		})
	}
}
