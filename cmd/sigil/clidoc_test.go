package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

var update = flag.Bool("update", false, "rewrite docs/cli.md from the commands")

// cliReference is docs/cli.md: every command's usage and flags, generated
// from the command tree itself by cobra's doc package, in one file.
func cliReference(t *testing.T) []byte {
	var buf bytes.Buffer
	buf.WriteString("# The `sigil` command line\n\nGenerated from the commands themselves (`make docs`); `make test` fails if it is stale.\n\n")
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		c.DisableAutoGenTag = true
		var one bytes.Buffer
		if err := doc.GenMarkdownCustom(c, &one, anchor); err != nil {
			t.Fatal(err)
		}
		// One file: demote each command's headings one level under the page's.
		buf.WriteString(strings.ReplaceAll(one.String(), "\n## ", "\n### "))
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := newRoot()
	root.InitDefaultHelpCmd()
	walk(root)
	return buf.Bytes()
}

// anchor turns cobra's per-command file names into links within the page.
func anchor(file string) string {
	return "#" + strings.ReplaceAll(strings.TrimSuffix(file, ".md"), "_", "-")
}

func TestCLIReferenceIsFresh(t *testing.T) {
	const path = "../../docs/cli.md"
	got := cliReference(t)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("docs/cli.md is stale: run make docs (%v)", err)
	}
}
