package e2e_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docsRun are the Markdown files whose ```sh blocks a test runs (README,
// docs/namespaces.md and docs/import.md by runExamples, docs/production.md by
// TestProductionGuideRuns).
var docsRun = map[string]bool{"README.md": true, "docs/namespaces.md": true, "docs/production.md": true, "docs/import.md": true}

// Every shell block of the README and docs/ runs in a test or says, in
// a <!-- not run: REASON --> comment just above it, why it cannot; a
// block that looks like shell is marked as such; no doc names a file
// that does not ship.
func TestEveryShellBlockRunsOrSaysWhy(t *testing.T) {
	root := filepath.Join("..", "..")
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files = append(files, filepath.Join(root, "README.md"))
	fence := regexp.MustCompile("(?ms)^```([a-z]*)\n(.*?)^```")
	shellLike := regexp.MustCompile(`(?m)^\s*(\$ )?(sigil|curl|make|sudo|systemctl|openssl) `)
	checked := 0
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		if rel == filepath.Join("docs", "cli.md") { // generated from the commands' help
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		doc := string(b)
		for _, m := range fence.FindAllStringSubmatchIndex(doc, -1) {
			lang, body := doc[m[2]:m[3]], doc[m[4]:m[5]]
			switch {
			case lang == "" && shellLike.MatchString(body):
				t.Errorf("%s: a block of shell without a language (```sh, or ```text for output): %.60q", rel, body)
			case lang == "sh" || lang == "bash" || lang == "shell" || lang == "console":
				checked++
				if !docsRun[filepath.ToSlash(rel)] && !notRun.MatchString(doc[:m[0]]) {
					t.Errorf("%s: a shell block no test runs and no <!-- not run: REASON --> explains: %.60q", rel, body)
				}
			}
		}
		for _, missing := range []string{"CONFIG.md", "CLI.md", "DESIGN.md", "FACTS.md"} {
			if strings.Contains(doc, missing) {
				t.Errorf("%s names %s, which does not ship", rel, missing)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d shell blocks found", checked)
	}
}
