package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Every command that groups others refuses a word that names none of
// them (non-zero exit), and prints its help when bare.
func TestUnknownSubcommandsFail(t *testing.T) {
	var groups []string
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() {
			groups = append(groups, strings.TrimPrefix(c.CommandPath(), "sigil"))
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRoot())
	if len(groups) < 8 {
		t.Fatalf("only %d command groups found: %v", len(groups), groups)
	}
	for _, g := range groups {
		args := strings.Fields(g)
		root := newRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(append(args, "no-such-command"))
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), `unknown command "no-such-command"`) {
			t.Errorf("sigil%s no-such-command: %v", g, err)
		}
		root = newRoot()
		var help strings.Builder
		root.SetOut(&help)
		root.SetArgs(args)
		if err := root.Execute(); err != nil || !strings.Contains(help.String(), "Available Commands") {
			t.Errorf("sigil%s bare: %v %q", g, err, help.String())
		}
	}
}
