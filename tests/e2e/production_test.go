package e2e_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/tests/framework"
)

// notRun marks a shell block a test does not run, with the reason.
var notRun = regexp.MustCompile(`<!-- not run: [^>]+-->\s*$`)

// runnableBlocks are the ```sh blocks of a Markdown file not marked
// <!-- not run: … -->, in order.
func runnableBlocks(doc string) []string {
	var out []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatchIndex(doc, -1) {
		if !notRun.MatchString(doc[:m[0]]) {
			out = append(out, doc[m[2]:m[3]])
		}
	}
	return out
}

// freePort is a loopback port nobody listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// docs/production.md runs as written, step after step, in one shell, in
// a temporary folder standing for /etc/sigil and /var/lib/sigil: a token
// from `sigil hsm init`, the PKI from `sigil pki`, `serve --config`, a
// JWT signed with a client certificate the PKI issued and verified by
// PyJWT, a certificate from another CA refused with a clear error. Only
// the listening ports are changed, to free ones.
func TestProductionGuideRuns(t *testing.T) {
	framework.RequireTools(t, "openssl", "curl", "python3")
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "production.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := runnableBlocks(string(doc))
	if len(blocks) < 6 {
		t.Fatalf("only %d runnable blocks in docs/production.md", len(blocks))
	}
	bin := framework.Build(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.Symlink(bin, filepath.Join(dir, "bin", "sigil"))
	script := "set -eo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + strings.Join(blocks, "\n")
	for _, port := range []string{"7443", "7080", "7081"} {
		script = strings.ReplaceAll(script, "127.0.0.1:"+port, "127.0.0.1:"+freePort(t))
	}
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(dir, "bin")+":/usr/bin:"+os.Getenv("PATH"), // Debian's python3, which has PyJWT (make sys-deps)
		"SIGIL_ETC="+filepath.Join(dir, "etc"), "SIGIL_LIB="+filepath.Join(dir, "lib"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		serveLog, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
		refused, _ := os.ReadFile(filepath.Join(dir, "refused.txt"))
		t.Fatalf("docs/production.md failed: %v\n--- output:\n%s\n--- serve.log:\n%s\n--- refused.txt:\n%s", err, out, serveLog, refused)
	}
	for _, want := range []string{`token "sigil" initialised`, "ES256      yes         yes", "auth/client.crt: OK", "alice", "refused the client certificate"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the guide's output lacks %q:\n%s", want, out)
		}
	}
	// Each use of the CA key is on the record, as its operator's.
	audit, _ := os.ReadFile(filepath.Join(dir, "lib", "audit.jsonl"))
	for _, op := range []string{`"operation":"pki.issue"`, `"identity":"local:`} {
		if !strings.Contains(string(audit), op) {
			t.Errorf("the audit log lacks %s", op)
		}
	}
}
