package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sigil-hsm/sigil/internal/audit"
)

func newAudit() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Check audit logs"}
	cmd.AddCommand(&cobra.Command{
		Use:   "verify FILE…",
		Short: "Check the hash chain of audit files, oldest first (audit.jsonl.1 audit.jsonl.2 … audit.jsonl)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			n, err := audit.Verify(files)
			if err != nil {
				return fmt.Errorf("audit chain broken at %w (%d lines before it verified)", err, n)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "ok: %d lines, chain intact\n", n)
			return err
		},
	})
	return cmd
}
