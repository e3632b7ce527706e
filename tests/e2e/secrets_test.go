package e2e_test

import (
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/testutil/kmstest"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// TestSecretsNeverAppear runs every operation, successes and failures,
// against a server that holds known secrets, and looks for them in
// everything it and the CLI print, in the audit log and in /metrics.
func TestSecretsNeverAppear(t *testing.T) {
	framework.RequireTools(t)
	bin := framework.Build(t)
	dir := t.TempDir()
	data := filepath.Join(dir, ".sigil-dev")
	creds, err := kmstest.FakeCredentials() // throwaway values from testdata/
	if err != nil {
		t.Fatal(err)
	}
	awsSecret := creds["AWS_SECRET_ACCESS_KEY"]
	srv := framework.ServeDev(t, bin, data, "AWS_SECRET_ACCESS_KEY="+awsSecret, "AWS_ACCESS_KEY_ID="+creds["AWS_ACCESS_KEY_ID"])
	stop, logs := func() { srv.Stop(t) }, srv.Logs.String
	pin, err := os.ReadFile(filepath.Join(data, "softhsm", devmode.TokenLabel+".pin"))
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"PIN": strings.TrimSpace(string(pin)), "AWS secret": awsSecret}
	for _, f := range []string{"server.key", "client.key"} {
		b, _ := os.ReadFile(filepath.Join(data, "tls", f))
		block, _ := pem.Decode(b)
		secrets["TLS key "+f] = base64.StdEncoding.EncodeToString(block.Bytes)[:40]
	}

	var out strings.Builder
	run := func(args ...string) {
		b, _ := exec.Command(bin, args...).CombinedOutput()
		out.Write(b)
	}
	cli := func(args ...string) { run(append(args, "--data-dir", data)...) }
	cli("keys", "create", "raw-1", "--alg", "ES256")
	cli("keys", "create", "jwt-1", "--alg", "EdDSA", "--purpose", "jwt")
	cli("keys", "create", "eth-1", "--alg", "ES256K", "--purpose", "eth", "--chain-ids", "1")
	cli("keys", "create", "BAD", "--alg", "ES256")
	cli("keys", "list")
	cli("keys", "get", "eth-1", "--json")
	cli("keys", "policy", "jwt-1", "--max-token-ttl", "30m")
	cli("keys", "policy", "eth-1", "--chain-ids", "1,10")
	cli("keys", "rotate", "jwt-1")
	cli("keys", "revoke", "jwt-1", "--generation", "2")
	cli("keys", "rotate", "raw-1")
	cli("sign", "--key", "raw-1", "--digest", strings.Repeat("ab", 32))
	cli("sign", "--key", "raw-1", "--digest", "00")
	cli("sign", "--key", "jwt-1", "--digest", strings.Repeat("ab", 32))
	cli("jwt", "sign", "--key", "jwt-1", "--claims", `{"sub":"alice"}`)
	cli("jwt", "sign", "--key", "jwt-1", "--claims", `[1]`)
	cli("eth", "address", "--key", "eth-1")
	cli("eth", "sign-tx", "--key", "eth-1", "--tx", `{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x1","gas":"0x5208","gasPrice":"0x1"}`)
	cli("eth", "sign-tx", "--key", "eth-1", "--tx", `{"chainId":"0x5","nonce":"0x0","gas":"0x5208","gasPrice":"0x1"}`)
	cli("eth", "sign-message", "--key", "eth-1", "--message", "hello")
	typed := filepath.Join(dir, "typed.json")
	os.WriteFile(typed, []byte(`{"types":{"EIP712Domain":[{"name":"name","type":"string"}],"M":[{"name":"a","type":"string"}]},"primaryType":"M","domain":{"name":"d"},"message":{"a":"b"}}`), 0o600)
	cli("eth", "sign-typed-data", "--key", "eth-1", "--file", typed)
	dc, _ := devmode.ReadClient(data)
	if resp, err := http.Get("http://" + dc.AdminAddr + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out.Write(b)
	}
	cli("audit", "verify", filepath.Join(data, "audit.jsonl"))
	stop()

	// Start-up failures that handle the PIN: a literal PIN in a config,
	// and a wrong PIN from the environment.
	wrongPIN := "not-the-pin-" + secrets["PIN"][:4] // a mistyped PIN is a secret too
	secrets["wrong PIN"] = wrongPIN
	cfg, policy := filepath.Join(dir, "bad.yaml"), filepath.Join(dir, "policy.yaml")
	os.WriteFile(policy, []byte("rules:\n  - identity: cn:ops\n    keys: [\"*\"]\n    allow: [keys.read]\n"), 0o600)
	for _, pinRef := range []string{secrets["PIN"], "env:SIGIL_TEST_WRONG_PIN"} {
		os.WriteFile(cfg, []byte(`grpc: {addr: "127.0.0.1:0", tls: {cert: `+filepath.Join(data, "tls", "server.crt")+`, key: `+filepath.Join(data, "tls", "server.key")+
			`, client_ca: `+filepath.Join(data, "tls", "ca.crt")+`}}
http: {public_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0"}
store: {type: bbolt, path: `+filepath.Join(dir, "other.db")+`}
audit: {path: `+filepath.Join(dir, "other-audit.jsonl")+`}
policy: `+policy+`
backends:
  hsm: {type: pkcs11, module: /usr/lib/softhsm/libsofthsm2.so, token: `+devmode.TokenLabel+`, pin: "`+pinRef+`"}
`), 0o600)
		cmd := exec.Command(bin, "serve", "--config", cfg)
		cmd.Env = append(os.Environ(), "SIGIL_TEST_WRONG_PIN="+wrongPIN, "SOFTHSM2_CONF="+filepath.Join(data, "softhsm", "softhsm2.conf"))
		b, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("serve started with pin %q", pinRef)
		}
		out.Write(b)
	}

	audit, _ := os.ReadFile(filepath.Join(data, "audit.jsonl"))
	everything := map[string]string{"server log": logs(), "CLI output, metrics and start-up errors": out.String(), "audit log": string(audit)}
	for where, text := range everything {
		for what, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("the %s appears in the %s", what, where)
			}
		}
	}
	for _, want := range []string{"ok: ", "sigil_sign_operations_total", "login refused", "pin: must be a reference"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the run did not exercise what it should: no %q in the output", want)
		}
	}
	if !strings.Contains(string(audit), `"operation":"eth.sign_tx"`) {
		t.Error("no transaction in the audit log")
	}
}
