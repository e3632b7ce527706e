package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

func newSign() *cobra.Command {
	var keyID, digestHex, messageFile, format string
	cmd := &cobra.Command{
		Use:   "sign --key ID (--digest HEX | --message-file FILE)",
		Short: "Sign a digest, or a file, with a raw-purpose key",
		Args:  cobra.NoArgs,
	}
	c := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if (digestHex == "") == (messageFile == "") {
			return errors.New("sign needs exactly one of --digest and --message-file")
		}
		req := &sigilv1.SignRequest{KeyId: keyID}
		switch format {
		case "der":
		case "raw":
			req.Format = sigilv1.SignatureFormat_SIGNATURE_FORMAT_RAW
		default:
			return fmt.Errorf("--format %q: want der or raw", format)
		}
		return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
			if err := setSignInput(ctx, conn, req, digestHex, messageFile); err != nil {
				return err
			}
			resp, err := sigilv1.NewSigningServiceClient(conn).Sign(ctx, req)
			if err != nil {
				return err
			}
			sig := base64.StdEncoding.EncodeToString(resp.GetSignature())
			if c.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{
					"signature": sig, "algorithm": resp.GetAlgorithm(), "generation": resp.GetGeneration(), "kid": resp.GetKid()})
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), sig)
			return err
		})
	}
	f := cmd.Flags()
	f.StringVar(&keyID, "key", "", "key ID")
	f.StringVar(&digestHex, "digest", "", "hex digest of the algorithm's hash")
	f.StringVar(&messageFile, "message-file", "", "file to sign (hashed locally, except for EdDSA)")
	f.StringVar(&format, "format", "der", "ECDSA signature encoding: der or raw (r‖s)")
	cmd.MarkFlagRequired("key")
	return cmd
}

// setSignInput fills req's digest or message. A file is hashed here with
// the key's hash, so only the digest crosses the network; an EdDSA key
// signs the message itself.
func setSignInput(ctx context.Context, conn *grpc.ClientConn, req *sigilv1.SignRequest, digestHex, messageFile string) error {
	if digestHex != "" {
		d, err := hex.DecodeString(strings.TrimPrefix(digestHex, "0x"))
		if err != nil {
			return fmt.Errorf("--digest: %w", err)
		}
		req.Input = &sigilv1.SignRequest_Digest{Digest: d}
		return nil
	}
	msg, err := os.ReadFile(messageFile)
	if err != nil {
		return err
	}
	key, err := sigilv1.NewKeyServiceClient(conn).GetKey(ctx, &sigilv1.GetKeyRequest{Id: req.GetKeyId()})
	if err != nil {
		return err
	}
	alg, err := signer.ParseAlgorithm(key.GetKey().GetAlgorithm())
	if err != nil {
		return err
	}
	if alg == signer.EdDSA {
		req.Input = &sigilv1.SignRequest_Message{Message: msg}
		return nil
	}
	req.Input = &sigilv1.SignRequest_Digest{Digest: alg.Input(msg)}
	return nil
}
