package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/client"
	"github.com/sigil-hsm/sigil/console"
	"github.com/sigil-hsm/sigil/internal/approval"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

func newApprovals() *cobra.Command {
	cmd := &cobra.Command{Use: "approvals", Short: "Inspect, approve and deny requests held for dual control; fetch their results"}
	c := addClientFlags(cmd)
	cmd.AddCommand(newApprovalsList(c), newApprovalsShow(c), newApprovalsApprove(c), newApprovalsDeny(c), newApprovalsResult(c))
	return cmd
}

// approvalCall runs one ApprovalService call that answers with a held
// request, and prints it.
func approvalCall(c *clientFlags, cmd *cobra.Command, call func(context.Context, sigilv1.ApprovalServiceClient) (*sigilv1.Approval, error)) error {
	return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
		a, err := call(ctx, sigilv1.NewApprovalServiceClient(conn))
		if err != nil {
			return err
		}
		return c.printApproval(cmd, a)
	})
}

// printApproval prints a held request: protobuf JSON under --json.
func (c *clientFlags) printApproval(cmd *cobra.Command, a *sigilv1.Approval) error {
	if c.json {
		return printJSON(cmd.OutOrStdout(), protoJSON(a))
	}
	return printApproval(cmd.OutOrStdout(), a)
}

func newApprovalsList(c *clientFlags) *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:   "list [--state S]",
		Short: "List the held requests you made or may decide, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewApprovalServiceClient(conn).ListApprovals(ctx, &sigilv1.ListApprovalsRequest{State: state})
				if err != nil {
					return err
				}
				if c.json {
					out := []json.RawMessage{}
					for _, a := range resp.GetApprovals() {
						out = append(out, protoJSON(a))
					}
					return printJSON(cmd.OutOrStdout(), out)
				}
				for _, a := range resp.GetApprovals() {
					fmt.Fprintf(cmd.OutOrStdout(), "%s  %s  %s  %s on %s  by %s  %d/%d approvals  expires %s\n", a.GetApprovalId(), a.GetState(),
						approval.Printable(summaryLine(a)), a.GetOperation(), a.GetKeyId(), approval.Printable(a.GetRequester()), len(a.GetApprovals()), a.GetQuorum(), timeString(a.GetExpiresAt()))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only requests in this state: pending, approved, running, done, failed, denied, expired")
	return cmd
}

func newApprovalsShow(c *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a held request: what it asks (key, operation, chain, to, value, …) and the request itself, who approved, what it waits for",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := sigilv1.NewApprovalServiceClient(conn).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: args[0]})
				if err != nil {
					return err
				}
				if c.json {
					return printJSON(cmd.OutOrStdout(), protoJSON(resp))
				}
				if err := printApproval(cmd.OutOrStdout(), resp.GetApproval()); err != nil {
					return err
				}
				if err := printRequest(cmd.OutOrStdout(), resp.GetApproval(), resp.GetRequest()); err != nil {
					return err
				}
				return printPasskeys(cmd.OutOrStdout(), resp)
			})
		},
	}
}

// printPasskeys checks each vote's passkey assertion here, against the
// public key enrolled for it, over the challenge of this approval, the
// decision and the SHA-256 of the request's bytes as shown (printRequest
// checked they hash to it): a vote the server counted that its passkey
// did not make shows as NOT VERIFIED.
func printPasskeys(w io.Writer, resp *sigilv1.GetApprovalResponse) error {
	a := resp.GetApproval()
	for _, v := range a.GetApprovals() {
		if len(v.GetPasskeyAssertion()) == 0 {
			continue
		}
		verdict := "verified here, over this approval and payload sha256"
		var as console.Assertion
		switch {
		case json.Unmarshal(v.GetPasskeyAssertion(), &as) != nil:
			verdict = "NOT VERIFIED: not an assertion"
		case len(v.GetPasskeyPublicKey()) == 0:
			verdict = "not checked: its passkey's enrollment is gone"
		default:
			err := console.CheckAssertion(&as, v.GetPasskeyPublicKey(), console.Challenge(a.GetApprovalId(), "approve", a.GetPayloadSha256()),
				console.Relying{Origin: v.GetPasskeyOrigin(), RPID: resp.GetConsoleRpId()})
			if err != nil {
				verdict = "NOT VERIFIED: " + err.Error()
			}
		}
		if _, err := fmt.Fprintf(w, "passkey of %s (credential %s): %s\n", approval.Printable(v.GetIdentity()), approval.Printable(as.CredentialID), verdict); err != nil {
			return err
		}
	}
	return nil
}

// printRequest prints the held request's bytes as the message of its
// method's request type, in protobuf JSON, after checking they hash to
// the hash approvals name.
func printRequest(w io.Writer, a *sigilv1.Approval, raw []byte) error {
	if raw == nil {
		_, err := fmt.Fprintln(w, "request: no longer kept")
		return err
	}
	m, err := approval.DecodeRequest(a.GetMethod(), raw, a.GetPayloadSha256())
	if err != nil {
		return fmt.Errorf("%v: do not approve it", err)
	}
	text, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("the request cannot be shown whole (%v): do not approve it", err)
	}
	_, err = fmt.Fprintf(w, "request (%s): %s\n", m.ProtoReflect().Descriptor().FullName(), approval.Printable(string(text)))
	return err
}

func newApprovalsApprove(c *clientFlags) *cobra.Command {
	var sum string
	cmd := &cobra.Command{
		Use:   "approve ID [--sha256 HEX]",
		Short: "Approve a held request; the approval completing its quorum runs it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.use(cmd.Context(), func(cl *client.Client) error {
				a, err := cl.Approve(cmd.Context(), args[0], sum)
				if err != nil {
					return err
				}
				return c.printApproval(cmd, a)
			})
		},
	}
	cmd.Flags().StringVar(&sum, "sha256", "", "the payload SHA-256 you inspected (from show); the approval counts only for it (default: the one shown now)")
	return cmd
}

func newApprovalsDeny(c *clientFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "deny ID [--reason TEXT]",
		Short: "Deny a held request: it never runs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return approvalCall(c, cmd, func(ctx context.Context, ac sigilv1.ApprovalServiceClient) (*sigilv1.Approval, error) {
				resp, err := ac.Deny(ctx, &sigilv1.DenyRequest{ApprovalId: args[0], Reason: reason})
				return resp.GetApproval(), err
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the requester and the audit trail")
	return cmd
}

func newApprovalsResult(c *clientFlags) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "result ID [--wait DUR]",
		Short: "Print what a held request gave once it ran (as its own command would), or fail saying what it waits for",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.use(cmd.Context(), func(cl *client.Client) error {
				res, err := awaitResult(cmd.Context(), cl, args[0], wait)
				if err != nil {
					return err
				}
				return printResult(cmd.OutOrStdout(), res, c.json)
			})
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to DUR for the request to be approved and run (or to end otherwise)")
	return cmd
}

// awaitResult is the result of held request id, asked once, or with
// wait, polled until it ends or wait passes.
func awaitResult(ctx context.Context, cl *client.Client, id string, wait time.Duration) (proto.Message, error) {
	if wait <= 0 {
		return cl.ApprovalResult(ctx, id)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return cl.AwaitApprovalResult(ctx, id, 2*time.Second)
}

// printResult prints a held request's response as the command that
// asked for it prints it: a signed transaction as `eth sign-tx` does, a
// key as `keys get` does; anything else as protobuf JSON.
func printResult(w io.Writer, res proto.Message, asJSON bool) error {
	switch r := res.(type) {
	case *sigilv1.SignTransactionResponse:
		raw := hexutil.Encode(r.GetRawTransaction())
		if asJSON {
			return printJSON(w, map[string]string{"raw": raw, "hash": r.GetHash(), "from": r.GetFrom()})
		}
		_, err := fmt.Fprintln(w, raw)
		return err
	case interface{ GetKey() *sigilv1.Key }:
		return printKey(w, r.GetKey(), asJSON)
	}
	return printJSON(w, protoJSON(res))
}

// protoJSON is m in protobuf JSON with the .proto field names.
func protoJSON(m proto.Message) json.RawMessage {
	b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	return b
}

// summaryLine is a request's value and recipient, or its action, in brief.
func summaryLine(a *sigilv1.Approval) string {
	var parts []string
	for _, f := range a.GetSummary() {
		switch f.GetName() {
		case "action", "value", "to":
			parts = append(parts, f.GetName()+" "+f.GetValue())
		}
	}
	return strings.Join(parts, ", ")
}

// printApproval prints a held request for a human; every value a client
// could have chosen is made Printable first.
func printApproval(w io.Writer, a *sigilv1.Approval) error {
	p := approval.Printable
	fmt.Fprintf(w, "approval %s  %s\n", a.GetApprovalId(), strings.ToUpper(a.GetState()))
	fmt.Fprintf(w, "requested by %s at %s; expires %s\n", p(a.GetRequester()), timeString(a.GetCreatedAt()), timeString(a.GetExpiresAt()))
	fmt.Fprintf(w, "method %s\n", p(a.GetMethod()))
	for _, f := range a.GetSummary() {
		fmt.Fprintf(w, "  %-12s %s\n", p(f.GetName())+":", p(f.GetValue()))
	}
	fmt.Fprintf(w, "payload sha256 %s\n", a.GetPayloadSha256())
	fmt.Fprintf(w, "approvals %d of %d, from %s\n", len(a.GetApprovals()), a.GetQuorum(), strings.Join(a.GetApprovers(), ", "))
	for _, v := range a.GetApprovals() {
		fmt.Fprintf(w, "  approved by %s at %s\n", v.GetIdentity(), timeString(v.GetAt()))
	}
	if a.GetDeniedBy() != "" {
		fmt.Fprintf(w, "denied by %s: %s\n", p(a.GetDeniedBy()), p(a.GetReason()))
	}
	if a.GetErrorCode() != "" {
		fmt.Fprintf(w, "failed: %s: %s\n", p(a.GetErrorCode()), p(a.GetErrorMessage()))
	}
	_, err := fmt.Fprintf(w, "result: sigil approvals result %s\n", a.GetApprovalId())
	return err
}
