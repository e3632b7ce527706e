package crosscheck

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// RP is a long-lived relying-party process on a JWT library nobody at
// Sigil wrote, configured as docs/relying-parties.md says. It keeps its
// JWK Set cache between tokens, as a real relying party does.
type RP struct {
	Name string
	in   io.WriteCloser
	out  *bufio.Scanner
	mu   sync.Mutex
}

// RelyingParties starts one of each library the guide covers, fetching
// the JWK Set at url, told that Sigil's max-age is maxAge: Node jose 5
// and 6, PyJWT (Debian's python3-jwt), and Go's jwx v3 and keyfunc (the
// tests/rpcheck module).
func RelyingParties(tb testing.TB, url string, maxAge time.Duration) []*RP {
	tb.Helper()
	Require(tb)
	secs := fmt.Sprint(int(maxAge.Seconds()))
	bin := buildRPCheck(tb)
	return []*RP{
		startRP(tb, "jose 5", "node", filepath.Join(dir(), "rp-jose.mjs"), url, "5", secs),
		startRP(tb, "jose 6", "node", filepath.Join(dir(), "rp-jose.mjs"), url, "6", secs),
		startRP(tb, "PyJWT", "/usr/bin/python3", filepath.Join(dir(), "rp-pyjwt.py"), url, secs),
		startRP(tb, "jwx v3", bin, "-lib", "jwx", "-url", url, "-max-age", maxAge.String()),
		startRP(tb, "keyfunc v3", bin, "-lib", "keyfunc", "-url", url, "-max-age", maxAge.String()),
	}
}

// buildRPCheck builds the Go relying parties (their own module).
func buildRPCheck(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "rpcheck")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(dir(), "..", "..", "tests", "rpcheck")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building tests/rpcheck: %v\n%s", err, out)
	}
	return bin
}

func startRP(tb testing.TB, name, command string, args ...string) *RP {
	tb.Helper()
	cmd := exec.Command(command, args...)
	cmd.Dir = dir()
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("relying party %s: %v", name, err)
		}
		tb.Skipf("relying party %s: %v", name, err)
	}
	tb.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	return &RP{Name: name, in: in, out: bufio.NewScanner(out)}
}

// Verify asks the relying party to verify token: whether it accepted it,
// and its answer.
func (r *RP) Verify(token string) (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := io.WriteString(r.in, token+"\n"); err != nil {
		return false, "write: " + err.Error()
	}
	if !r.out.Scan() {
		return false, fmt.Sprintf("no answer: %v", r.out.Err())
	}
	answer := r.out.Text()
	return strings.HasPrefix(answer, "ok"), answer
}
