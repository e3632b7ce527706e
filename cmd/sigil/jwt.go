package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

func newJWT() *cobra.Command {
	cmd := &cobra.Command{Use: "jwt", Short: "Mint JWTs"}
	c := addClientFlags(cmd)
	cmd.AddCommand(newJWTSign(c))
	return cmd
}

func newJWTSign(c *clientFlags) *cobra.Command {
	var keyID, claims, headers string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "sign --key ID --claims JSON [--ttl DURATION] [--headers JSON]",
		Short: "Sign claims as a compact JWS with a jwt key's active generation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &sigilv1.SignJWTRequest{KeyId: keyID, ClaimsJson: []byte(claims), HeadersJson: []byte(headers)}
			if ttl != 0 {
				req.Ttl = durationpb.New(ttl)
			}
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewJWTServiceClient(conn).SignJWT(ctx, req)
				if err != nil {
					return err
				}
				if c.json {
					return printJSON(cmd.OutOrStdout(), map[string]any{"token": resp.GetToken(), "kid": resp.GetKid(),
						"generation": resp.GetGeneration(), "expires": resp.GetExpireTime().AsTime().UTC().Format(time.RFC3339)})
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), resp.GetToken())
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyID, "key", "", "key ID (purpose jwt)")
	f.StringVar(&claims, "claims", "", "claims, a JSON object")
	f.StringVar(&headers, "headers", "", "extra protected headers, a JSON object")
	f.DurationVar(&ttl, "ttl", 0, "lifetime when the claims carry no exp (the key's max if unset)")
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("claims")
	return cmd
}

func newJWKSSet() *cobra.Command {
	cmd := &cobra.Command{Use: "jwks-set", Short: "Manage the JWK Sets jwt keys are published in (one per issuer)"}
	c := addClientFlags(cmd)
	cmd.AddCommand(newJWKSSetCreate(c), newJWKSSetList(c), newJWKSSetUpdate(c), newJWKSSetDelete(c))
	return cmd
}

func newJWKSSetCreate(c *clientFlags) *cobra.Command {
	var allowES256K bool
	var patterns []string
	cmd := &cobra.Command{
		Use:   "create NAME [--allow-es256k] [--keys PATTERN…]",
		Short: "Make a JWK Set, served at /jwks/NAME.json, that jwt keys matching its patterns may join (--jwks-set)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewJWTServiceClient(conn).CreateJWKSet(ctx, &sigilv1.CreateJWKSetRequest{Name: args[0], AllowEs256K: allowES256K, KeyPatterns: patterns})
				if err != nil {
					return err
				}
				return printSets(cmd, c, []*sigilv1.JWKSet{resp.GetSet()}, false)
			})
		},
	}
	cmd.Flags().BoolVar(&allowES256K, "allow-es256k", false, "let ES256K (secp256k1) keys join; many relying-party libraries then reject the whole set")
	cmd.Flags().StringArrayVar(&patterns, "keys", nil, "the key IDs that may join, a * and ? glob, repeatable (default: NAME-*)")
	return cmd
}

func newJWKSSetUpdate(c *clientFlags) *cobra.Command {
	var patterns []string
	cmd := &cobra.Command{
		Use:   "update NAME --keys PATTERN…",
		Short: "Replace a JWK Set's key patterns (every key in it must still match)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewJWTServiceClient(conn).UpdateJWKSet(ctx, &sigilv1.UpdateJWKSetRequest{Name: args[0], KeyPatterns: patterns})
				if err != nil {
					return err
				}
				return printSets(cmd, c, []*sigilv1.JWKSet{resp.GetSet()}, false)
			})
		},
	}
	cmd.Flags().StringArrayVar(&patterns, "keys", nil, "the key IDs that may join, a * and ? glob, repeatable")
	cmd.MarkFlagRequired("keys")
	return cmd
}

func newJWKSSetDelete(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a JWK Set no key is in",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				if _, err := sigilv1.NewJWTServiceClient(conn).DeleteJWKSet(ctx, &sigilv1.DeleteJWKSetRequest{Name: args[0]}); err != nil {
					return err
				}
				return c.emit(cmd, map[string]string{"deleted": args[0]}, "deleted JWK Set "+args[0])
			})
		},
	}
}

func newJWKSSetList(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the JWK Sets with their keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewJWTServiceClient(conn).ListJWKSets(ctx, &sigilv1.ListJWKSetsRequest{})
				if err != nil {
					return err
				}
				return printSets(cmd, c, resp.GetSets(), true)
			})
		},
	}
}

// setJSON is the `--json` shape of a JWK Set.
type setJSON struct {
	Name        string   `json:"name"`
	AllowES256K bool     `json:"allow_es256k"`
	Path        string   `json:"path"`
	KeyPatterns []string `json:"key_patterns"`
	Keys        []string `json:"keys"`
}

// printSets prints sets, one line each, or as JSON: a list, or the one
// set's object unless asList.
func printSets(cmd *cobra.Command, c *clientFlags, sets []*sigilv1.JWKSet, asList bool) error {
	out := make([]setJSON, 0, len(sets))
	for _, s := range sets {
		out = append(out, setJSON{s.GetName(), s.GetAllowEs256K(), s.GetPath(), s.GetKeyPatterns(), append([]string{}, s.GetKeyIds()...)})
	}
	if c.json && asList {
		return printJSON(cmd.OutOrStdout(), out)
	}
	if c.json {
		return printJSON(cmd.OutOrStdout(), out[0])
	}
	for _, s := range out {
		fmt.Fprintf(cmd.OutOrStdout(), "%s  %s  es256k %v  admits %v  keys %v\n", s.Name, s.Path, s.AllowES256K, s.KeyPatterns, s.Keys)
	}
	return nil
}
