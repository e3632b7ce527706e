package main

import (
	"io"
	"os"
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

// audit show prints the records of one request, and fails for none.
func TestAuditShowByRequestID(t *testing.T) {
	path := t.TempDir() + "/audit.jsonl"
	os.WriteFile(path, []byte(`{"seq":1,"request_id":"aaaaaaaa","operation":"sign.raw"}
{"seq":2,"request_id":"bbbbbbbb","operation":"sign.raw"}
{"seq":3,"request_id":"aaaaaaaa","operation":"eth.sign_tx.committed"}
torn line
`), 0o600)
	var out strings.Builder
	n, err := showRequest(&out, path, "aaaaaaaa")
	if err != nil || n != 2 || strings.Contains(out.String(), "bbbbbbbb") {
		t.Fatalf("show: %d %v\n%s", n, err, out.String())
	}
	root := newRoot()
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	root.SetArgs([]string{"audit", "show", "--request-id", "cccccccc", path})
	if err := root.Execute(); err == nil {
		t.Fatal("audit show of a request no record has succeeded")
	}
}
