package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/ethereum/go-ethereum/rpc"
	"github.com/spf13/cobra"

	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/namespace"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// newEthSendTx is eth send-tx: eth_sendTransaction on the server's
// Ethereum JSON-RPC endpoint, the one path that fills a transaction from
// the node behind Sigil, signs and submits it.
func newEthSendTx(c *clientFlags) *cobra.Command {
	var keyID, txJSON, endpoint string
	cmd := &cobra.Command{
		Use:   "send-tx --key ID --tx JSON",
		Short: "Fill a transaction's nonce, gas and fees from the node behind Sigil (ethrpc.upstream), sign and submit it; prints its hash",
		Long: `send-tx sends eth_sendTransaction to the server's Ethereum JSON-RPC
endpoint (--ethrpc, env SIGIL_ETHRPC, or a dev data dir's), with the
client certificate and namespace of every other command. What the
transaction leaves out is filled from the node; it is signed under the
key's policy and submitted. A transaction held for approval fails with
its approval ID; once approved, the server submits it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var tx map[string]json.RawMessage
			if err := json.Unmarshal([]byte(txJSON), &tx); err != nil || tx == nil {
				return fmt.Errorf("--tx: not a JSON object")
			}
			rc, err := c.ethRPC(cmd.Context(), endpoint)
			if err != nil {
				return err
			}
			defer rc.Close()
			var addr string
			err = ethCall(c, cmd, func(ctx context.Context, ec sigilv1.EthereumServiceClient) error {
				resp, err := ec.GetAddress(ctx, &sigilv1.GetAddressRequest{KeyId: keyID})
				addr = resp.GetAddress()
				return err
			})
			if err != nil {
				return err
			}
			if from, ok := tx["from"]; ok && !strings.EqualFold(strings.Trim(string(from), `"`), addr) {
				return fmt.Errorf("--tx: from %s is not key %q's address %s", from, keyID, addr)
			}
			tx["from"], _ = json.Marshal(addr)
			var hash string
			if err := rc.CallContext(cmd.Context(), &hash, "eth_sendTransaction", tx); err != nil {
				return sendError(err)
			}
			return c.emit(cmd, map[string]string{"key": keyID, "from": addr, "hash": hash}, hash)
		},
	}
	cmd.Flags().StringVar(&keyID, "key", "", "eth key ID")
	cmd.Flags().StringVar(&txJSON, "tx", "", `the transaction object (JSON, hex quantities), e.g. {"to":"0x…","value":"0x1"}; "from" is the key's`)
	cmd.Flags().StringVar(&endpoint, "ethrpc", os.Getenv("SIGIL_ETHRPC"), "the server's Ethereum JSON-RPC endpoint, https://HOST:PORT (env SIGIL_ETHRPC; a dev data dir's if unset)")
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("tx")
	return cmd
}

// ethRPC is a JSON-RPC client of the server's Ethereum endpoint, with the
// client certificate and the namespace the flags give.
func (c *clientFlags) ethRPC(ctx context.Context, endpoint string) (*rpc.Client, error) {
	cert, key, ca, ns := c.cert, c.key, c.ca, c.namespace
	if c.dataDir != "" {
		dc, err := devmode.ReadClient(c.dataDir)
		if err != nil {
			return nil, err
		}
		cert, key, ca, ns = dc.Cert, dc.Key, dc.CA, cmp.Or(ns, dc.Namespace)
		if endpoint == "" && dc.EthRPC != "" {
			endpoint = "https://" + dc.EthRPC
		}
	}
	if endpoint == "" {
		return nil, errors.New("no Ethereum JSON-RPC endpoint: give --ethrpc https://HOST:PORT (or SIGIL_ETHRPC)")
	}
	tc, err := mtls.ClientConfig(cert, key, ca)
	if err != nil {
		return nil, err
	}
	opts := []rpc.ClientOption{rpc.WithHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}})}
	if ns != "" {
		opts = append(opts, rpc.WithHeader(namespace.Header, ns))
	}
	return rpc.DialOptions(ctx, endpoint, opts...)
}

// sendError is what eth_sendTransaction's error says to an operator: a
// held transaction's approval ID, or the hash of a transaction
// signed but refused by the node.
func sendError(err error) error {
	var de rpc.DataError
	if !errors.As(err, &de) {
		return err
	}
	data, _ := json.Marshal(de.ErrorData())
	var d struct {
		ApprovalID string `json:"approval_id"`
		Hash       string `json:"hash"`
	}
	json.Unmarshal(data, &d)
	switch {
	case d.ApprovalID != "":
		return fmt.Errorf("held for approval %s (sigil approvals show %s); once approved, the server submits it", d.ApprovalID, d.ApprovalID)
	case d.Hash != "":
		return fmt.Errorf("%v (transaction %s is signed and recorded but was not taken; look for it, or resubmit its bytes, before sending again)", err, d.Hash)
	}
	return err
}
