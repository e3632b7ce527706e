package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

func newKeys() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Create and inspect keys"}
	c := addClientFlags(cmd)
	cmd.AddCommand(newKeysCreate(c), newKeysList(c), newKeysGet(c))
	return cmd
}

func newKeysCreate(c *clientFlags) *cobra.Command {
	req := &sigilv1.CreateKeyRequest{}
	var bits int
	cmd := &cobra.Command{
		Use:   "create ID --alg ES256|ES384|ES256K|RS256|PS256|EdDSA",
		Short: "Generate a key inside its backend",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Id, req.RsaBits = args[0], int32(bits)
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewKeyServiceClient(conn).CreateKey(ctx, req)
				if err != nil {
					return err
				}
				return printKey(cmd.OutOrStdout(), resp.GetKey(), c.json)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Algorithm, "alg", "", "ES256, ES384, ES256K, RS256, PS256 or EdDSA")
	f.StringVar(&req.Purpose, "purpose", "raw", "jwt, eth or raw")
	f.StringVar(&req.Backend, "backend", "", "backend name (the default backend if empty)")
	f.IntVar(&bits, "rsa-bits", 0, "RSA modulus size for RS256/PS256: 2048 (default) or 3072")
	cmd.MarkFlagRequired("alg")
	return cmd
}

func newKeysGet(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a key, its generations and public keys",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewKeyServiceClient(conn).GetKey(ctx, &sigilv1.GetKeyRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return printKey(cmd.OutOrStdout(), resp.GetKey(), c.json)
			})
		},
	}
}

func newKeysList(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewKeyServiceClient(conn).ListKeys(ctx, &sigilv1.ListKeysRequest{})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if c.json {
					out := make([]keyJSON, 0, len(resp.GetKeys()))
					for _, k := range resp.GetKeys() {
						out = append(out, toKeyJSON(k))
					}
					return printJSON(w, out)
				}
				fmt.Fprintf(w, "%-24s %-7s %-8s %-12s %s\n", "ID", "ALG", "PURPOSE", "BACKEND", "GENERATIONS")
				for _, k := range resp.GetKeys() {
					fmt.Fprintf(w, "%-24s %-7s %-8s %-12s %s\n", k.GetId(), k.GetAlgorithm(), k.GetPurpose(), k.GetBackend(), generationSummary(k))
				}
				return nil
			})
		},
	}
}

// keyJSON is the `--json` shape of a key (CLI.md).
type keyJSON struct {
	ID          string           `json:"id"`
	Alg         string           `json:"alg"`
	Purpose     string           `json:"purpose"`
	Backend     string           `json:"backend"`
	RSABits     int32            `json:"rsa_bits,omitempty"`
	Generations []generationJSON `json:"generations"`
}

type generationJSON struct {
	Generation   int32  `json:"generation"`
	State        string `json:"state"`
	KID          string `json:"kid"`
	PublicKeyPEM string `json:"public_key_pem"`
	BackendRef   string `json:"backend_ref,omitempty"`
}

func toKeyJSON(k *sigilv1.Key) keyJSON {
	out := keyJSON{ID: k.GetId(), Alg: k.GetAlgorithm(), Purpose: k.GetPurpose(), Backend: k.GetBackend(), RSABits: k.GetRsaBits(), Generations: []generationJSON{}}
	for _, g := range k.GetGenerations() {
		out.Generations = append(out.Generations, generationJSON{g.GetGeneration(), g.GetState(), g.GetKid(), g.GetPublicKeyPem(), g.GetBackendRef()})
	}
	return out
}

func printKey(w io.Writer, k *sigilv1.Key, asJSON bool) error {
	if asJSON {
		return printJSON(w, toKeyJSON(k))
	}
	fmt.Fprintf(w, "%s  %s  purpose %s  backend %s\n", k.GetId(), k.GetAlgorithm(), k.GetPurpose(), k.GetBackend())
	for _, g := range k.GetGenerations() {
		fmt.Fprintf(w, "generation %d  %s  kid %s\n%s", g.GetGeneration(), g.GetState(), g.GetKid(), g.GetPublicKeyPem())
	}
	return nil
}

func generationSummary(k *sigilv1.Key) string {
	s := ""
	for i, g := range k.GetGenerations() {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%d:%s", g.GetGeneration(), g.GetState())
	}
	return s
}
