package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sigil-hsm/sigil/client"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

func newSign() *cobra.Command {
	var keyID, digestHex, messageFile, format, batchFile string
	cmd := &cobra.Command{
		Use:   "sign --key ID (--digest HEX | --message-file FILE) | sign [--key ID] --batch FILE",
		Short: "Sign a digest, or a file, with a raw-purpose key; or a batch of digests (JSON lines)",
		Long: `sign signs one digest (--digest) or file (--message-file, hashed here
with the key's hash; an EdDSA key signs the file itself).

With --batch FILE ("-" for standard input), it reads one JSON object a
line, {"key": ID, "digest": HEX} (or "message": BASE64 for EdDSA; "key"
defaults to --key), signs them with SignBatch calls of up to 1000 items (and 240 KiB)
(each item decided, signed and audited as a sign of its own), and writes
one JSON line per item in the same order: {"signature": BASE64} or
{"error": "Code: message"}. It exits non-zero if any item failed.`,
		Args: cobra.NoArgs,
	}
	c := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if batchFile != "" {
			return signBatch(cmd, c, keyID, batchFile)
		}
		if keyID == "" {
			return errors.New("sign needs --key (or --batch)")
		}
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
			digest, message, err := signInput(ctx, conn, keyID, digestHex, messageFile)
			if err != nil {
				return err
			}
			if message != nil {
				req.Input = &sigilv1.SignRequest_Message{Message: message}
			} else {
				req.Input = &sigilv1.SignRequest_Digest{Digest: digest}
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
	f.StringVar(&batchFile, "batch", "", `sign the JSON lines of FILE ("-": standard input): {"key": ID, "digest": HEX}`)
	return cmd
}

// batchLine is one line of a batch file.
type batchLine struct {
	Key     string `json:"key"`
	Digest  string `json:"digest"`
	Message []byte `json:"message"`
}

// signBatch is sign --batch: every line read (a line that does not
// parse is refused before anything is signed), signed by SignBatch, and
// each result written as a line.
func signBatch(cmd *cobra.Command, c *clientFlags, defaultKey, path string) error {
	in := cmd.InOrStdin()
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	var items []client.BatchItem
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var l batchLine
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		it := client.BatchItem{KeyID: cmp.Or(l.Key, defaultKey), Message: l.Message}
		if l.Message == nil {
			d, err := hex.DecodeString(strings.TrimPrefix(l.Digest, "0x"))
			if err != nil || len(d) == 0 {
				return fmt.Errorf("%s:%d: digest: want hex", path, n)
			}
			it.Digest = d
		}
		if it.KeyID == "" {
			return fmt.Errorf("%s:%d: no key (give \"key\", or --key)", path, n)
		}
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
		results, err := client.FromConn(conn).SignBatch(ctx, items)
		if err != nil {
			return err
		}
		out, failed := json.NewEncoder(cmd.OutOrStdout()), 0
		for _, r := range results {
			if r.Err != nil {
				failed++
				out.Encode(map[string]string{"error": r.Err.Error()})
				continue
			}
			out.Encode(map[string]string{"signature": base64.StdEncoding.EncodeToString(r.Signature)})
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d items failed", failed, len(results))
		}
		return nil
	})
}

// signInput is the digest, or for an EdDSA key the message, to sign or
// verify. A file is hashed here with the key's hash, so only the digest
// crosses the network; an EdDSA key signs the message itself.
func signInput(ctx context.Context, conn *grpc.ClientConn, keyID, digestHex, messageFile string) (digest, message []byte, err error) {
	if digestHex != "" {
		d, err := hex.DecodeString(strings.TrimPrefix(digestHex, "0x"))
		if err != nil {
			return nil, nil, fmt.Errorf("--digest: %w", err)
		}
		return d, nil, nil
	}
	msg, err := os.ReadFile(messageFile)
	if err != nil {
		return nil, nil, err
	}
	key, err := sigilv1.NewKeyServiceClient(conn).GetKey(ctx, &sigilv1.GetKeyRequest{Id: keyID})
	if err != nil {
		return nil, nil, err
	}
	alg, err := signer.ParseAlgorithm(key.GetKey().GetAlgorithm())
	if err != nil {
		return nil, nil, err
	}
	if alg == signer.EdDSA {
		return nil, msg, nil
	}
	return alg.Input(msg), nil, nil
}

func newVerify() *cobra.Command {
	var keyID, digestHex, messageFile, sigB64, kid string
	var gen int32
	cmd := &cobra.Command{
		Use:   "verify --key ID (--digest HEX | --message-file FILE) --signature B64 [--generation N | --kid KID]",
		Short: "Check a signature with a raw key: any generation still trusted (not revoked or destroyed) verifies",
		Args:  cobra.NoArgs,
	}
	c := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if (digestHex == "") == (messageFile == "") {
			return errors.New("verify needs exactly one of --digest and --message-file")
		}
		sig, err := base64.StdEncoding.DecodeString(sigB64)
		if err != nil {
			return fmt.Errorf("--signature: %w", err)
		}
		return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
			digest, message, err := signInput(ctx, conn, keyID, digestHex, messageFile)
			if err != nil {
				return err
			}
			req := &sigilv1.VerifyRequest{KeyId: keyID, Signature: sig, Generation: gen, Kid: kid}
			if message != nil {
				req.Input = &sigilv1.VerifyRequest_Message{Message: message}
			} else {
				req.Input = &sigilv1.VerifyRequest_Digest{Digest: digest}
			}
			resp, err := sigilv1.NewSigningServiceClient(conn).Verify(ctx, req)
			if err != nil {
				return err
			}
			if c.json {
				if err := printJSON(cmd.OutOrStdout(), map[string]any{"valid": resp.GetValid(), "generation": resp.GetGeneration(), "kid": resp.GetKid()}); err != nil {
					return err
				}
			} else if resp.GetValid() {
				fmt.Fprintf(cmd.OutOrStdout(), "valid: generation %d, kid %s\n", resp.GetGeneration(), resp.GetKid())
			}
			if !resp.GetValid() {
				return errors.New("invalid: the signature does not verify with any trusted generation of the key")
			}
			return nil
		})
	}
	f := cmd.Flags()
	f.StringVar(&keyID, "key", "", "key ID")
	f.StringVar(&digestHex, "digest", "", "hex digest of the algorithm's hash")
	f.StringVar(&messageFile, "message-file", "", "the signed file (hashed locally, except for EdDSA)")
	f.StringVar(&sigB64, "signature", "", "the signature, base64 (DER or r‖s for ECDSA)")
	f.Int32Var(&gen, "generation", 0, "verify with this generation only")
	f.StringVar(&kid, "kid", "", "verify with the generation of this kid only")
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("signature")
	return cmd
}
