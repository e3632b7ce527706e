package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/tests/framework"
)

// shBlock is a ```sh block of a Markdown file.
var shBlock = regexp.MustCompile("(?s)```sh\n(.*?)```")

// Every shell example of the README runs, in order, against a dev server
// in a fresh folder, and exits 0: the docs cannot drift from the CLI.
// Lines that build, start the server or take long (make, go build, the
// drill, which has its own test) are left out; curl goes to the server's
// real port and fails on an HTTP error.
func TestREADMEExamplesRun(t *testing.T) {
	runExamples(t, "README.md", 6)
}

// The shell examples of docs/import.md run the same way: a key made by
// openssl, wrapped with the documented commands to parameters from a
// SoftHSM token, imported, and a signature verified with its original
// public key.
func TestImportGuideExamplesRun(t *testing.T) {
	runExamples(t, filepath.Join("docs", "import.md"), 5)
}

// The shell examples of docs/namespaces.md run the same way.
func TestNamespaceGuideExamplesRun(t *testing.T) {
	runExamples(t, filepath.Join("docs", "namespaces.md"), 4)
}

// runExamples runs every ```sh block of the Markdown file doc (a path
// from the module root) against a fresh dev server, and wants at least
// min of them.
func runExamples(t *testing.T, doc string, min int) {
	framework.RequireTools(t, "openssl", "curl")
	readme, err := os.ReadFile(filepath.Join("..", "..", doc))
	if err != nil {
		t.Fatal(err)
	}
	bin := framework.Build(t)
	dir := t.TempDir()
	srv := framework.ServeDev(t, bin, filepath.Join(dir, ".sigil-dev"))
	os.MkdirAll(filepath.Join(dir, "docs", "examples"), 0o755) // the files the docs ship for their examples
	examples, _ := filepath.Glob(filepath.Join("..", "..", "docs", "examples", "*"))
	for _, f := range examples {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(dir, "docs", "examples", filepath.Base(f)), b, 0o600)
	}
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.Symlink(bin, filepath.Join(dir, "bin", "sigil"))
	blocks := shBlock.FindAllStringSubmatch(string(readme), -1)
	ran := 0
	for _, b := range blocks {
		var lines []string
		for _, line := range strings.Split(b[1], "\n") {
			if strings.HasPrefix(line, "make ") || strings.HasPrefix(line, "go build") || strings.HasPrefix(line, "sigil drill") {
				continue
			}
			line = strings.ReplaceAll(line, "http://127.0.0.1:7080", "http://"+srv.HTTPAddr)
			line = strings.Replace(line, "curl -i ", "curl -fsS -i ", 1)
			lines = append(lines, line)
		}
		script := strings.TrimSpace(strings.Join(lines, "\n"))
		if !strings.Contains(script, "sigil ") && !strings.Contains(script, "openssl ") {
			continue
		}
		cmd := exec.Command("bash", "-eo", "pipefail", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(dir, "bin")+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s example failed: %v\n%s\n--- output:\n%s", doc, err, script, out)
		}
		ran++
	}
	if ran < min {
		t.Fatalf("only %d examples of %s ran; did it lose its sh blocks?", ran, doc)
	}
}
