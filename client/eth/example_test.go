package eth_test

import (
	"context"
	"fmt"
	"log"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/sigil-hsm/sigil/client"
	"github.com/sigil-hsm/sigil/client/eth"
)

// A treasury service signs an EIP-1559 transaction under the key's
// spending policy.
func ExampleClient_SignTx() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	to := common.HexToAddress("0x3535353535353535353535353535353535353535")
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Nonce: 0, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(30e9),
		Gas: 21000, To: &to, Value: big.NewInt(1e16)})
	signed, err := eth.New(c).SignTx(ctx, "treasury-1", tx, big.NewInt(1))
	if err != nil {
		log.Fatal(err)
	}
	raw, _ := signed.MarshalBinary()
	fmt.Printf("0x%x\n", raw)
}

// A contract binding (abigen) transacts as an eth key: every transaction
// it makes is signed by Sigil, and sent through the node behind Sigil's
// Ethereum endpoint.
func ExampleClient_TransactOpts() {
	ctx := context.Background()
	o := client.FromEnv()
	c, err := client.Dial(ctx, o)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	node, err := eth.DialNode(ctx, "https://sigil.internal:7545", o.CertFile, o.KeyFile, o.CAFile)
	if err != nil {
		log.Fatal(err)
	}
	chain, err := node.ChainID(ctx)
	if err != nil {
		log.Fatal(err)
	}
	opts, err := eth.New(c).TransactOpts(ctx, "treasury-1", chain)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(opts.From.Hex()) // then: token.Transfer(opts, to, amount), or bind.DeployContract(opts, …, node, …)
}
