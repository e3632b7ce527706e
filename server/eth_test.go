package server_test

import (
	"context"
	"testing"

	"github.com/ethereum/go-ethereum/core/types"
	"google.golang.org/grpc/codes"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

func TestEthereumServiceCodes(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	ec := sigilv1.NewEthereumServiceClient(h.Conn)
	k, err := h.Keys.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "wallet", Algorithm: "ES256K", Purpose: "eth",
		EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}, MaxValue: "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := k.GetKey().GetAddress()
	if k.GetKey().GetEthPolicy().GetMaxValue() != "1000" || len(addr) != 42 {
		t.Fatalf("created %v", k.GetKey())
	}
	h.create(t, "raw", "ES256K", "raw")
	tx := []byte(`{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x1","gas":"0x5208","maxFeePerGas":"0x1","maxPriorityFeePerGas":"0x1"}`)
	resp, err := ec.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "wallet", Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: tx}, ChainId: 1})
	if err != nil || resp.GetFrom() != addr {
		t.Fatalf("SignTransaction: %v %v", resp, err)
	}
	signed := new(types.Transaction)
	if err := signed.UnmarshalBinary(resp.GetRawTransaction()); err != nil || signed.Hash().Hex() != resp.GetHash() {
		t.Fatalf("raw transaction: %v", err)
	}
	a, err := ec.GetAddress(ctx, &sigilv1.GetAddressRequest{KeyId: "wallet"})
	if err != nil || a.GetAddress() != addr {
		t.Fatalf("GetAddress: %v %v", a, err)
	}
	signTx := func(id string, body []byte, chain uint64) error {
		_, err := ec.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: id, Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: body}, ChainId: chain})
		return err
	}
	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"raw key", signTx("raw", tx, 0), codes.FailedPrecondition},
		{"unknown key", signTx("nope", tx, 0), codes.NotFound},
		{"malformed", signTx("wallet", []byte(`{`), 0), codes.InvalidArgument},
		{"chain ID mismatch", signTx("wallet", tx, 5), codes.InvalidArgument},
		{"no transaction", func() error {
			_, err := ec.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "wallet"})
			return err
		}(), codes.InvalidArgument},
		{"over max value", signTx("wallet", []byte(`{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x3e9","gas":"0x5208","gasPrice":"0x1"}`), 0), codes.PermissionDenied},
		{"address of a raw key", func() error { _, err := ec.GetAddress(ctx, &sigilv1.GetAddressRequest{KeyId: "raw"}); return err }(), codes.FailedPrecondition},
		{"message to a raw key", func() error {
			_, err := ec.SignMessage(ctx, &sigilv1.SignMessageRequest{KeyId: "raw", Message: []byte("m")})
			return err
		}(), codes.FailedPrecondition},
		{"bad typed data", func() error {
			_, err := ec.SignTypedData(ctx, &sigilv1.SignTypedDataRequest{KeyId: "wallet", TypedDataJson: []byte(`{"types":{}}`)})
			return err
		}(), codes.InvalidArgument},
		{"rotate an eth key", rotate(h, "wallet"), codes.FailedPrecondition},
		{"bad policy address", func() error {
			_, err := h.Keys.UpdateKeyPolicy(ctx, &sigilv1.UpdateKeyPolicyRequest{Id: "wallet", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}, AllowTo: []string{"0xnope"}}})
			return err
		}(), codes.InvalidArgument},
		{"eth policy on a raw key", func() error {
			_, err := h.Keys.UpdateKeyPolicy(ctx, &sigilv1.UpdateKeyPolicyRequest{Id: "raw", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})
			return err
		}(), codes.FailedPrecondition},
		{"eth purpose with another curve", func() error {
			_, err := h.Keys.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "w2", Algorithm: "ES256", Purpose: "eth"})
			return err
		}(), codes.InvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantCode(t, c.err, c.want) })
	}
}
