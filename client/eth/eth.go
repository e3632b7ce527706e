// Package eth is the Go client's Ethereum side, apart so that a program
// that only mints JWTs does not link go-ethereum: signatures as
// go-ethereum types, a bind.TransactOpts for contract bindings (abigen)
// and an ethclient on Sigil's JSON-RPC endpoint, so
// contract.Transfer(opts, to, amount) is signed in the HSM and sent
// through the node behind Sigil.
package eth

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rlp"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/sigil-hsm/sigil/client"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// Client signs with Sigil's eth keys over a client.Client's connection.
type Client struct{ *client.Client }

// New is c's Ethereum side.
func New(c *client.Client) Client { return Client{c} }

// Address is eth key keyID's address.
func (c Client) Address(ctx context.Context, keyID string) (common.Address, error) {
	resp, err := c.Eth.GetAddress(ctx, &sigilv1.GetAddressRequest{KeyId: keyID})
	if err != nil {
		return common.Address{}, err
	}
	return common.HexToAddress(resp.GetAddress()), nil
}

// SignTx signs tx (unsigned; any type) for chainID with eth key keyID,
// under the key's spending policy, and returns it signed. It is not
// retried: a transaction counts against the daily limit.
func (c Client) SignTx(ctx context.Context, keyID string, tx *types.Transaction, chainID *big.Int) (*types.Transaction, error) {
	if chainID == nil || chainID.Sign() <= 0 || !chainID.IsUint64() {
		return nil, fmt.Errorf("sigil client: chain ID %v: a positive 64-bit number", chainID)
	}
	unsigned, err := UnsignedRLP(tx, chainID)
	if err != nil {
		return nil, err
	}
	resp, err := c.Eth.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: keyID, ChainId: chainID.Uint64(),
		Transaction: &sigilv1.SignTransactionRequest_UnsignedRlp{UnsignedRlp: unsigned}})
	if err != nil {
		return nil, err
	}
	signed := new(types.Transaction)
	if err := signed.UnmarshalBinary(resp.GetRawTransaction()); err != nil {
		return nil, fmt.Errorf("sigil client: the signed transaction: %w", err)
	}
	return signed, nil
}

// SignMessage signs msg as EIP-191 personal_sign does and returns the 65
// bytes r‖s‖v (v 27 or 28).
func (c Client) SignMessage(ctx context.Context, keyID string, msg []byte) ([]byte, error) {
	resp, err := c.Eth.SignMessage(ctx, &sigilv1.SignMessageRequest{KeyId: keyID, Message: msg})
	if err != nil {
		return nil, err
	}
	return resp.GetSignature(), nil
}

// SignTypedData signs an EIP-712 document and returns r‖s‖v.
func (c Client) SignTypedData(ctx context.Context, keyID string, td apitypes.TypedData) ([]byte, error) {
	// The domain as its Map gives it: only the members it has (the
	// struct would send empty ones its EIP712Domain type does not list).
	doc, err := json.Marshal(map[string]any{"types": td.Types, "primaryType": td.PrimaryType, "domain": td.Domain.Map(), "message": td.Message})
	if err != nil {
		return nil, fmt.Errorf("sigil client: typed data: %w", err)
	}
	resp, err := c.Eth.SignTypedData(ctx, &sigilv1.SignTypedDataRequest{KeyId: keyID, TypedDataJson: doc})
	if err != nil {
		return nil, err
	}
	return resp.GetSignature(), nil
}

// UnsignedRLP is tx's signing encoding, what SignTransaction's
// unsigned_rlp takes: for a legacy transaction the EIP-155 list
// rlp([nonce, gasPrice, gas, to, value, data, chainID, 0, 0]); for a
// typed one type ‖ rlp([its fields without v, r, s]).
func UnsignedRLP(tx *types.Transaction, chainID *big.Int) ([]byte, error) {
	if tx.Type() == types.LegacyTxType {
		return rlp.EncodeToBytes([]any{tx.Nonce(), tx.GasPrice(), tx.Gas(), tx.To(), tx.Value(), tx.Data(), chainID, uint(0), uint(0)})
	}
	signed, err := tx.WithoutBlobTxSidecar().MarshalBinary() // with whatever signature it has: dropped below
	if err != nil {
		return nil, err
	}
	var elems []rlp.RawValue
	if err := rlp.DecodeBytes(signed[1:], &elems); err != nil || len(elems) < 3 {
		return nil, fmt.Errorf("sigil client: encoding the transaction: %v", err)
	}
	// A typed transaction built without a chain ID (as contract bindings
	// build them, leaving it to the signer) takes chainID's.
	switch have := tx.ChainId(); {
	case have.Sign() == 0:
		if elems[0], err = rlp.EncodeToBytes(chainID); err != nil {
			return nil, err
		}
	case have.Cmp(chainID) != 0:
		return nil, fmt.Errorf("sigil client: the transaction is for chain %v, not %v", have, chainID)
	}
	b, err := rlp.EncodeToBytes(elems[:len(elems)-3])
	if err != nil {
		return nil, err
	}
	return append([]byte{tx.Type()}, b...), nil
}
