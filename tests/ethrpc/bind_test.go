package ethrpc_test

import (
	"context"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"

	"github.com/sigil-hsm/sigil/client"
	"github.com/sigil-hsm/sigil/client/eth"
)

// testToken is a throwaway ERC-20 (go-ethereum's abigen test token): its
// ABI and creation bytecode.
func testToken(t *testing.T) (abi.ABI, []byte) {
	raw, err := os.ReadFile(filepath.Join("testdata", "test-token.json"))
	if err != nil {
		t.Fatal(err)
	}
	var art struct {
		ABI      json.RawMessage `json:"abi"`
		Bytecode string          `json:"bytecode"`
	}
	if err := json.Unmarshal(raw, &art); err != nil {
		t.Fatal(err)
	}
	parsed, err := abi.JSON(strings.NewReader(string(art.ABI)))
	if err != nil {
		t.Fatal(err)
	}
	return parsed, common.FromHex(art.Bytecode)
}

// A go-ethereum contract binding, over an ethclient on Sigil's endpoint
// (the node behind it answers reads and estimates), with the Go client's
// TransactOpts: the token is deployed and a transfer made, both signed in
// the HSM, mined, and sent from Sigil's address.
func TestContractBindingThroughTheGoClient(t *testing.T) {
	e := newNodeEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	cert, key, ca := e.CA.WriteClient(t, dir, "spiffe://example.org/treasury")
	c, err := client.Dial(ctx, client.Options{Addr: e.Addr, CertFile: cert, KeyFile: key, CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	node, err := eth.DialNode(ctx, e.rpcURL, cert, key, ca)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := node.ChainID(ctx)
	if err != nil || chain.Uint64() != devChain {
		t.Fatalf("chain ID through Sigil: %v %v", chain, err)
	}
	opts, err := eth.New(c).TransactOpts(ctx, "treasury-1", chain)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ToLower(opts.From.Hex()) != e.addr["treasury-1"] {
		t.Fatalf("TransactOpts.From %s, the key is %s", opts.From.Hex(), e.addr["treasury-1"])
	}
	parsed, code := testToken(t)
	addr, deploy, err := bind.DeployContract(opts, code, node, mustPack(t, parsed, "", big.NewInt(1_000_000), "Sigil Test", uint8(0), "SGT"))
	if err != nil {
		t.Fatalf("deploying: %v", err)
	}
	if r, err := bind.WaitDeployed(ctx, node, deploy.Hash()); err != nil || r != addr {
		t.Fatalf("deployed at %v: %v", r, err)
	}
	contract := bind.NewBoundContract(addr, parsed, node, node, node)
	to := common.HexToAddress("0x3535353535353535353535353535353535353535")
	tx, err := contract.Transact(opts, "transfer", to, big.NewInt(250))
	if err != nil {
		t.Fatalf("transfer: %v", err)
	}
	rcpt, err := bind.WaitMined(ctx, node, tx.Hash())
	if err != nil || rcpt.Status != 1 {
		t.Fatalf("transfer receipt: %+v %v", rcpt, err)
	}
	sender, err := node.TransactionSender(ctx, tx, rcpt.BlockHash, rcpt.TransactionIndex)
	if err != nil || sender != opts.From {
		t.Fatalf("the transfer's sender: %v %v", sender, err)
	}
	out, err := contract.CallRaw(&bind.CallOpts{Context: ctx}, mustPack(t, parsed, "balanceOf", to))
	if err != nil {
		t.Fatal(err)
	}
	if vals, err := parsed.Unpack("balanceOf", out); err != nil || vals[0].(*big.Int).Int64() != 250 {
		t.Errorf("balance of the recipient: %v %v", vals, err)
	}
}

func mustPack(t *testing.T, a abi.ABI, method string, args ...any) []byte {
	t.Helper()
	b, err := a.Pack(method, args...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
