package eth

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/big"
	"net/http"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/sigil-hsm/sigil/internal/mtls"
)

// TransactOpts are the options a go-ethereum contract binding (abigen)
// transacts with as eth key keyID on chainID: From is the key's address,
// and every transaction the binding makes is signed by Sigil, under the
// key's policy. Nonce, gas and fees are left to the binding, which asks
// the backend it was made with (an ethclient from DialNode, say).
func (c Client) TransactOpts(ctx context.Context, keyID string, chainID *big.Int) (*bind.TransactOpts, error) {
	from, err := c.Address(ctx, keyID)
	if err != nil {
		return nil, err
	}
	return &bind.TransactOpts{From: from, Context: ctx, Signer: c.SignerFn(ctx, keyID, from, chainID)}, nil
}

// SignerFn is a bind.SignerFn that signs with eth key keyID (whose
// address is from) on chainID; it refuses any other address.
func (c Client) SignerFn(ctx context.Context, keyID string, from common.Address, chainID *big.Int) bind.SignerFn {
	return func(addr common.Address, tx *types.Transaction) (*types.Transaction, error) {
		if addr != from {
			return nil, fmt.Errorf("sigil client: key %q is %s, not %s", keyID, from.Hex(), addr.Hex())
		}
		return c.SignTx(ctx, keyID, tx, chainID)
	}
}

// DialNode is an ethclient on Sigil's Ethereum JSON-RPC endpoint at url
// (https://HOST:PORT), authenticated with the client certificate o names:
// its reads and gas estimates are answered by the node behind Sigil
// (ethrpc.upstream), and SendTransaction submits through it.
func DialNode(ctx context.Context, url, certFile, keyFile, caFile string) (*ethclient.Client, error) {
	tc, err := mtls.ClientConfig(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	return dial(ctx, url, tc)
}

func dial(ctx context.Context, url string, tc *tls.Config) (*ethclient.Client, error) {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}
	rc, err := rpc.DialOptions(ctx, url, rpc.WithHTTPClient(hc))
	if err != nil {
		return nil, err
	}
	return ethclient.NewClient(rc), nil
}
