package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sigil-hsm/sigil/server"
)

func newVersion() *cobra.Command {
	c := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the module version, commit, Go version and build date",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := server.Version()
			if c.json {
				return printJSON(cmd.OutOrStdout(), v)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "sigil %s (commit %s%s, built %s, %s)\n", v.Version, v.Commit, map[bool]string{true: ", modified"}[v.Modified], v.Date, v.Go)
			return err
		},
	}
	cmd.Flags().BoolVar(&c.json, "json", false, "print machine-readable JSON")
	return cmd
}
