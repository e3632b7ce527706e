package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newMan writes the man pages of every command (make release packs them):
// hidden, as it is for packaging, not for operators.
func newMan() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "man --dir DIR",
		Short:  "Write the man pages of every command into DIR",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // reproducible: no generation date
			return doc.GenManTree(root, &doc.GenManHeader{Title: "SIGIL", Section: "1", Source: "Sigil", Manual: "Sigil Manual"}, dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "where to write the pages")
	cmd.MarkFlagRequired("dir")
	return cmd
}
