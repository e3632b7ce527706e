package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// checkConfig is a whole server configuration whose backends are the
// pkcs11 sections given, as `sigil hsm check --config` reads it.
func checkConfig(t *testing.T, dir string, backends string) string {
	t.Helper()
	cfg := fmt.Sprintf(`grpc:
  addr: 127.0.0.1:7443
  tls: {cert: %[1]s/server.crt, key: %[1]s/server.key, client_ca: %[1]s/ca.crt}
http: {public_addr: 127.0.0.1:7080, admin_addr: 127.0.0.1:7081}
store: {type: bbolt, path: %[1]s/keyring.db}
backends:
%[2]s
default_backend: hsm
policy: %[1]s/policy.yaml
audit: {path: %[1]s/audit.jsonl}
`, dir, backends)
	path := filepath.Join(dir, "sigil.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// capabilities reads `sigil hsm check`'s table of one backend: algorithm
// → "MECHANISMS WORKS".
func capabilities(out string) map[string]string {
	caps := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^(ES256|ES384|ES256K|EdDSA|RS256|PS256)\s+(yes|no)\s+(yes|no)`).FindAllStringSubmatch(out, -1) {
		caps[m[1]] = m[2] + " " + m[3]
	}
	return caps
}

// `sigil hsm init` makes a SoftHSM token with the user PIN a file holds,
// refuses a literal PIN and a label in use; `sigil hsm check` logs in and
// finds every algorithm working, and a wrong PIN fails the command.
func TestHSMInitAndCheckSoftHSM(t *testing.T) {
	framework.RequireTools(t)
	bin := framework.Build(t)
	dir := t.TempDir()
	conf, err := softhsm.WriteConf(dir)
	if err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(dir, "pin")
	os.WriteFile(pin, []byte("throwaway-test-pin\n"), 0o600)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), softhsm.ConfEnv+"="+conf, "WRONG_PIN=0000")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	module := softhsm.Module
	if out, err := run("hsm", "init", "--module", module, "--label", "prod", "--pin", "file:"+pin); err != nil || !strings.Contains(out, `token "prod" initialised`) {
		t.Fatalf("hsm init: %v %s", err, out)
	}
	if out, err := run("hsm", "init", "--module", module, "--label", "prod", "--pin", "file:"+pin); err == nil || !strings.Contains(out, "exists already") {
		t.Fatalf("a second init of the label: %v %s", err, out)
	}
	if out, err := run("hsm", "init", "--module", module, "--label", "prod ", "--pin", "file:"+pin); err == nil || !strings.Contains(out, "trailing spaces") {
		t.Fatalf("a label padded to pass for another: %v %s", err, out)
	}
	if out, err := run("hsm", "init", "--module", module, "--label", "other", "--pin", "1234"); err == nil || !strings.Contains(out, "file:PATH or env:NAME") {
		t.Fatalf("a literal PIN: %v %s", err, out)
	}
	good := fmt.Sprintf("  hsm: {type: pkcs11, module: %s, token: prod, pin: file:%s}\n", module, pin)
	out, err := run("hsm", "check", "--config", checkConfig(t, dir, good))
	if err != nil || !strings.Contains(out, "login ok") {
		t.Fatalf("hsm check: %v %s", err, out)
	}
	caps := capabilities(out)
	for _, alg := range []string{"ES256", "ES384", "ES256K", "EdDSA", "RS256", "PS256"} {
		if caps[alg] != "yes yes" {
			t.Errorf("%s on SoftHSM: %q\n%s", alg, caps[alg], out)
		}
	}
	bad := good + fmt.Sprintf("  wrong: {type: pkcs11, module: %s, token: prod, pin: env:WRONG_PIN}\n", module)
	out, err = run("hsm", "check", "--config", checkConfig(t, dir, bad))
	if err == nil || !strings.Contains(out, "CKR_PIN_INCORRECT") || !strings.Contains(out, "1 of 2 pkcs11 backends cannot be used") || strings.Contains(out, "0000") {
		t.Fatalf("a wrong PIN: %v %s", err, out)
	}
}

// opencryptoki's soft token: initialised by `sigil hsm init` (its SO PIN
// is the package's default until changed), RSA works and EC is refused
// cleanly, as the table says.
func TestHSMCheckOpencryptoki(t *testing.T) {
	const module = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"
	if _, err := os.Stat(module); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("opencryptoki is required under CI=true (make sys-deps): %v", err)
		}
		t.Skip(err)
	}
	framework.RequireTools(t)
	if exec.Command("pgrep", "-x", "pkcsslotd").Run() != nil {
		if out, err := exec.Command("/usr/sbin/pkcsslotd").CombinedOutput(); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("starting pkcsslotd: %v %s", err, out)
			}
			t.Skipf("pkcsslotd cannot be started here: %v %s", err, out)
		}
	}
	bin := framework.Build(t)
	dir := t.TempDir()
	pin, soPIN := filepath.Join(dir, "pin"), filepath.Join(dir, "so-pin")
	os.WriteFile(pin, []byte("12345678\n"), 0o600)   // throwaway: opencryptoki PINs are 4-8 characters
	os.WriteFile(soPIN, []byte("87654321\n"), 0o600) // opencryptoki's documented default SO PIN
	out, err := exec.Command(bin, "hsm", "init", "--module", module, "--label", "sigil-ci", "--pin", "file:"+pin, "--so-pin", "file:"+soPIN).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "exists already") { // the token outlives a run
		t.Fatalf("hsm init on opencryptoki: %v %s", err, out)
	}
	cfg := checkConfig(t, dir, fmt.Sprintf("  hsm: {type: pkcs11, module: %s, token: sigil-ci, pin: file:%s}\n", module, pin))
	b, err := exec.Command(bin, "hsm", "check", "--config", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("hsm check on opencryptoki: %v %s", err, b)
	}
	caps := capabilities(string(b))
	want := map[string]string{"RS256": "yes yes", "PS256": "yes yes", "ES256": "no no", "ES256K": "no no", "EdDSA": "no no"}
	for alg, w := range want {
		if caps[alg] != w {
			t.Errorf("%s on opencryptoki: %q, want %q\n%s", alg, caps[alg], w, b)
		}
	}
	if !strings.Contains(string(b), "does not offer CKM_EC_KEY_PAIR_GEN") {
		t.Errorf("the EC refusal does not name the mechanism:\n%s", b)
	}
}
