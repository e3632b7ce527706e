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
