// Command sigil is the Sigil signing service and its command-line client
// (CLI.md): `sigil serve` runs the server; every other command talks to a
// running server over gRPC.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	_ "github.com/sigil-hsm/sigil/signer/awskms" // registers the awskms backend type
	_ "github.com/sigil-hsm/sigil/signer/pkcs11" // registers the pkcs11 backend type
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sigil: "+oneLine(err))
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "sigil",
		Short:         "Sigil signs with keys that never leave an HSM or KMS",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServe(), newKeys(), newSign(), newVerify(), newJWT(), newJWKSSet(), newNS(), newEth(), newApprovals(), newDrill(), newAudit(), newHSM(), newPKI(), newBackup(), newRestore(), newConsole(), newVersion(), newMan())
	refuseUnknown(root)
	return root
}

// refuseUnknown makes every command that only groups others fail on a
// word that names none of them (cobra prints the group's help and exits
// 0, so a script's typo looked like success). Bare, the group prints its
// help.
func refuseUnknown(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		refuseUnknown(c)
	}
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = cobra.NoArgs
		cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
}

// oneLine renders err for stderr: a gRPC status as "Code: message".
func oneLine(err error) string {
	if st, ok := status.FromError(err); ok && !errors.Is(err, context.Canceled) {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}
