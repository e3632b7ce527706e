package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

func newEth() *cobra.Command {
	cmd := &cobra.Command{Use: "eth", Short: "Sign Ethereum transactions, messages and typed data"}
	c := addClientFlags(cmd)
	cmd.AddCommand(newEthAddress(c), newEthSignTx(c), newEthSendTx(c), newEthReconcile(c), newEthSignMessage(c), newEthSignTypedData(c))
	return cmd
}

// ethCall runs fn with an Ethereum client.
func ethCall(c *clientFlags, cmd *cobra.Command, fn func(context.Context, sigilv1.EthereumServiceClient) error) error {
	return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
		return fn(ctx, sigilv1.NewEthereumServiceClient(conn))
	})
}

func newEthAddress(c *clientFlags) *cobra.Command {
	var keyID string
	cmd := &cobra.Command{
		Use:   "address --key ID",
		Short: "Print the key's EIP-55 address",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ethCall(c, cmd, func(ctx context.Context, ec sigilv1.EthereumServiceClient) error {
				resp, err := ec.GetAddress(ctx, &sigilv1.GetAddressRequest{KeyId: keyID})
				if err != nil {
					return err
				}
				return c.emit(cmd, map[string]string{"key": keyID, "address": resp.GetAddress()}, resp.GetAddress())
			})
		},
	}
	cmd.Flags().StringVar(&keyID, "key", "", "eth key ID")
	cmd.MarkFlagRequired("key")
	return cmd
}

func newEthSignTx(c *clientFlags) *cobra.Command {
	var keyID, txJSON string
	cmd := &cobra.Command{
		Use:   "sign-tx --key ID --tx JSON",
		Short: "Sign an eth_signTransaction object; prints the raw signed transaction",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ethCall(c, cmd, func(ctx context.Context, ec sigilv1.EthereumServiceClient) error {
				resp, err := ec.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: keyID,
					Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(txJSON)}})
				if err != nil {
					return err
				}
				raw := hexutil.Encode(resp.GetRawTransaction())
				if c.json {
					return printJSON(cmd.OutOrStdout(), map[string]string{"raw": raw, "hash": resp.GetHash(), "from": resp.GetFrom()})
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), raw)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&keyID, "key", "", "eth key ID")
	cmd.Flags().StringVar(&txJSON, "tx", "", "the transaction object (JSON, hex quantities)")
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("tx")
	return cmd
}

func newEthSignMessage(c *clientFlags) *cobra.Command {
	var keyID, message, file string
	cmd := &cobra.Command{
		Use:   "sign-message --key ID (--message TEXT | --message-file FILE)",
		Short: "Sign an EIP-191 personal message; prints the 65-byte signature",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			msg, err := textOrFile(message, file)
			if err != nil {
				return err
			}
			return ethCall(c, cmd, func(ctx context.Context, ec sigilv1.EthereumServiceClient) error {
				resp, err := ec.SignMessage(ctx, &sigilv1.SignMessageRequest{KeyId: keyID, Message: msg})
				if err != nil {
					return err
				}
				sig := hexutil.Encode(resp.GetSignature())
				return c.emit(cmd, map[string]string{"signature": sig, "address": resp.GetAddress()}, sig)
			})
		},
	}
	cmd.Flags().StringVar(&keyID, "key", "", "eth key ID")
	cmd.Flags().StringVar(&message, "message", "", "the message text")
	cmd.Flags().StringVar(&file, "message-file", "", "a file holding the message")
	cmd.MarkFlagRequired("key")
	return cmd
}

func textOrFile(text, file string) ([]byte, error) {
	switch {
	case (text == "") == (file == ""):
		return nil, errors.New("give exactly one of --message and --message-file")
	case file != "":
		return os.ReadFile(file)
	}
	return []byte(text), nil
}

func newEthSignTypedData(c *clientFlags) *cobra.Command {
	var keyID, file string
	cmd := &cobra.Command{
		Use:   "sign-typed-data --key ID --file FILE",
		Short: "Sign an eth_signTypedData_v4 document; prints the 65-byte signature",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			return ethCall(c, cmd, func(ctx context.Context, ec sigilv1.EthereumServiceClient) error {
				resp, err := ec.SignTypedData(ctx, &sigilv1.SignTypedDataRequest{KeyId: keyID, TypedDataJson: doc})
				if err != nil {
					return err
				}
				sig := hexutil.Encode(resp.GetSignature())
				return c.emit(cmd, map[string]string{"signature": sig, "hash": resp.GetHash(), "address": resp.GetAddress()}, sig)
			})
		},
	}
	cmd.Flags().StringVar(&keyID, "key", "", "eth key ID")
	cmd.Flags().StringVar(&file, "file", "", "the typed-data JSON document")
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("file")
	return cmd
}
