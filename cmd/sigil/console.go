package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

func newConsole() *cobra.Command {
	cmd := &cobra.Command{Use: "console", Short: "Enroll people for the browser console and manage their passkeys (console.admin on sigil.console)"}
	c := addClientFlags(cmd)
	var ttl time.Duration
	enroll := &cobra.Command{
		Use:   "enroll IDENTITY [--ttl 15m]",
		Short: "Print a one-time link that registers a passkey signing in as IDENTITY",
		Long: `enroll makes a one-time link, valid --ttl (15 minutes), that registers a
passkey for IDENTITY, a typed identity the policy names
(spiffe://example.org/treasury-officer/alice). Whoever opens it first
gets the console as that identity: send it as you would a password.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewConsoleServiceClient(conn).Enroll(ctx, &sigilv1.EnrollRequest{Identity: args[0], Ttl: durationpb.New(ttl)})
				if err != nil {
					return err
				}
				link := resp.GetUrl()
				if link == "" {
					link = "(this server serves no console) token " + resp.GetToken()
				}
				return c.emit(cmd, map[string]string{"identity": args[0], "url": resp.GetUrl(), "token": resp.GetToken(), "expires": resp.GetExpires().AsTime().Format(time.RFC3339), "link_id": resp.GetLinkId()}, link)
			})
		},
	}
	enroll.Flags().DurationVar(&ttl, "ttl", 15*time.Minute, "how long the link is valid (at most 24h)")
	list := &cobra.Command{
		Use:   "enrollments",
		Short: "List the registered passkeys and the enrollment links not yet used",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewConsoleServiceClient(conn).ListEnrollments(ctx, &sigilv1.ListEnrollmentsRequest{})
				if err != nil {
					return err
				}
				if c.json {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "CREDENTIAL\tIDENTITY\tCREATED\tREVOKED")
				for _, e := range resp.GetEnrollments() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%v\n", e.GetCredentialId(), e.GetIdentity(), e.GetCreated().AsTime().Format(time.RFC3339), e.GetRevoked())
				}
				if len(resp.GetPending()) > 0 {
					fmt.Fprintln(w, "\nPENDING LINK\tIDENTITY\tEXPIRES")
					for _, p := range resp.GetPending() {
						fmt.Fprintf(w, "%s\t%s\t%s\n", p.GetLinkId(), p.GetIdentity(), p.GetExpires().AsTime().Format(time.RFC3339))
					}
				}
				return w.Flush()
			})
		},
	}
	var linkID string
	revoke := &cobra.Command{
		Use:   "revoke CREDENTIAL-ID | --link LINK-ID",
		Short: "Revoke a passkey: it signs in and approves no more; or cancel a pending enrollment link",
		Long: "Revoke a passkey: it signs in and approves no more, and its sessions end at their next page. " +
			"With --link, cancel an enrollment link not yet used (its ID from sigil console enrollments).\n\n" +
			"A credential ID is base64url and may begin with '-': give it after --, as in sigil console revoke [flags] -- -KsP1wIng…",
		Args: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (linkID != "") || len(args) > 1 {
				return fmt.Errorf("name a passkey (CREDENTIAL-ID) or a link (--link LINK-ID): one of the two")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req, what := &sigilv1.RevokeEnrollmentRequest{LinkId: linkID}, "cancelled link "+linkID
			if len(args) == 1 {
				req, what = &sigilv1.RevokeEnrollmentRequest{CredentialId: args[0]}, "revoked "+args[0]
			}
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				if _, err := sigilv1.NewConsoleServiceClient(conn).RevokeEnrollment(ctx, req); err != nil {
					return err
				}
				return c.emit(cmd, map[string]string{"revoked": req.GetCredentialId(), "cancelled": req.GetLinkId()}, what)
			})
		},
	}
	revoke.Flags().StringVar(&linkID, "link", "", "cancel this pending enrollment link instead")
	cmd.AddCommand(enroll, list, revoke)
	return cmd
}
