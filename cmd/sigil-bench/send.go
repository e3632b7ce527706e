package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sync/atomic"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"google.golang.org/grpc"

	"github.com/sigil-hsm/sigil/internal/testutil/gethtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// sendTable: eth_sendTransaction through Sigil (which fills the nonce and
// chain from geth --dev behind it, signs and submits) against what a
// client does without it: eth_signTransaction of a transaction it filled
// itself (its own nonce counter), then its own eth_sendRawTransaction to
// the node. Both give the same gas and fees, so the cell measures what
// eth_sendTransaction adds (the nonce guard's node query and Sigil's hop
// to the node), not gas estimation, which a client that sets its own
// gas skips either way. geth makes a block a second, as a chain does, so
// a send is done when the node's pool takes it, not once a block was
// made for it alone. A key each, both funded; one caller (Sigil
// serializes a key's sends), the two sides taking turns call by call so
// that the node's block-by-block changes fall on both.
func (b *bench) sendTable(secured *grpc.ClientConn, node *gethtest.Node) ([]row, error) {
	addr := map[string]string{}
	for _, id := range []string{"bench-send-own", "bench-send-sigil"} {
		if _, err := sigilv1.NewKeyServiceClient(secured).CreateKey(b.ctx, &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256K", Purpose: "eth",
			EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1337}, MaxFee: "1000000000000000000"}}); err != nil {
			return nil, err
		}
		a, err := sigilv1.NewEthereumServiceClient(secured).GetAddress(b.ctx, &sigilv1.GetAddressRequest{KeyId: id})
		if err != nil {
			return nil, err
		}
		addr[id] = a.GetAddress()
		if err := node.FundErr(a.GetAddress(), new(big.Int).Mul(big.NewInt(1000), big.NewInt(1e18))); err != nil {
			return nil, err
		}
	}
	var nonce atomic.Uint64
	own := func(ctx context.Context) error {
		tx := fmt.Sprintf(`{"from":%q,"to":"0x3535353535353535353535353535353535353535","value":"0x1","nonce":"%s","gas":"0x5208","maxFeePerGas":"0x174876e800","maxPriorityFeePerGas":"0x3b9aca00","chainId":"0x539"}`,
			addr["bench-send-own"], hexutil.EncodeUint64(nonce.Add(1)-1))
		var raw string
		if err := b.rpcCall(ctx, b.ethRPCClient, b.ethRPC, &raw, "eth_signTransaction", json.RawMessage(tx)); err != nil {
			return err
		}
		return b.rpcCall(ctx, http.DefaultClient, node.URL, nil, "eth_sendRawTransaction", raw)
	}
	viaSigil := func(ctx context.Context) error {
		return b.rpcCall(ctx, b.ethRPCClient, b.ethRPC, nil, "eth_sendTransaction",
			map[string]string{"from": addr["bench-send-sigil"], "to": "0x3535353535353535353535353535353535353535", "value": "0x1",
				"gas": "0x5208", "maxFeePerGas": "0x174876e800", "maxPriorityFeePerGas": "0x3b9aca00"})
	}
	return b.rounds("eth_sendTransaction", []int{1}, sendRounds, func(int, bool) (x, y result, err error) {
		return interleaved(b.ctx, own, viaSigil, b.dur)
	})
}

// sendRounds: a send's time is mostly the node's, which varied from
// round to round more than anything Sigil adds (round ratios of 0.79 to
// 1.14 in one run, measured side after side); the median of more rounds
// steadies the cell.
const sendRounds = 9

// rpcCall runs one JSON-RPC call at url and decodes its result into out.
func (b *bench) rpcCall(ctx context.Context, c *http.Client, url string, out any, method string, params ...any) error {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.Error != nil {
		return fmt.Errorf("%s: %s", method, raw)
	}
	if out != nil {
		return json.Unmarshal(r.Result, out)
	}
	return nil
}
