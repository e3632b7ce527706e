package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// A key pair another tool (pkcs11-tool) made in the token is adopted: it
// signs, openssl verifies with its public key, keys get says adopted; a
// pair whose private key is extractable, and one already a key's, are
// refused.
func TestAdoptAKeyPairMadeByAnotherTool(t *testing.T) {
	framework.RequireTools(t, "pkcs11-tool", "openssl")
	bin := framework.Build(t)
	dir := t.TempDir()
	data := filepath.Join(dir, ".sigil-dev")
	srv := framework.ServeDev(t, bin, data)
	defer srv.Stop(t)
	pin, err := os.ReadFile(filepath.Join(data, "softhsm", devmode.TokenLabel+".pin"))
	if err != nil {
		t.Fatal(err)
	}
	keygen := func(label, id string, extra ...string) {
		t.Helper()
		args := append([]string{"--module", softhsm.Module, "--token-label", devmode.TokenLabel, "--login", "--pin", strings.TrimSpace(string(pin)),
			"--keypairgen", "--key-type", "EC:prime256v1", "--label", label, "--id", id, "--usage-sign"}, extra...)
		cmd := exec.Command("pkcs11-tool", args...)
		cmd.Env = append(os.Environ(), softhsm.ConfEnv+"="+filepath.Join(data, "softhsm", "softhsm2.conf"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pkcs11-tool: %v %s", err, out)
		}
	}
	keygen("legacy-signer", "0a0b", "--sensitive")
	keygen("leaky-signer", "0c0d", "--sensitive", "--extractable")
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append(args, "--data-dir", data)...).CombinedOutput()
		return string(out), err
	}
	if out, err := cli("keys", "adopt", "legacy", "--uri", "pkcs11:object=legacy-signer", "--purpose", "raw"); err != nil {
		t.Fatalf("adopt: %v %s", err, out)
	}
	out, err := cli("keys", "get", "legacy", "--json")
	var k struct {
		Alg, Origin string
		Generations []struct {
			PublicKeyPEM string `json:"public_key_pem"`
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &k) != nil || k.Origin != "adopted" || k.Alg != "ES256" || len(k.Generations) != 1 {
		t.Fatalf("keys get of the adopted key: %v %s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "pub.pem"), []byte(k.Generations[0].PublicKeyPEM), 0o600)
	os.WriteFile(filepath.Join(dir, "msg.txt"), []byte("adopted\n"), 0o600)
	sig, err := exec.Command("sh", "-c", bin+" sign --key legacy --message-file "+filepath.Join(dir, "msg.txt")+" --data-dir "+data+" | base64 -d > "+filepath.Join(dir, "msg.sig")).CombinedOutput()
	if err != nil {
		t.Fatalf("sign: %v %s", err, sig)
	}
	if v, err := exec.Command("openssl", "dgst", "-sha256", "-verify", filepath.Join(dir, "pub.pem"), "-signature", filepath.Join(dir, "msg.sig"), filepath.Join(dir, "msg.txt")).CombinedOutput(); err != nil || !strings.Contains(string(v), "Verified OK") {
		t.Fatalf("openssl: %v %s", err, v)
	}
	if out, err := cli("keys", "adopt", "leaky", "--uri", "pkcs11:object=leaky-signer", "--purpose", "raw"); err == nil || !strings.Contains(out, "extractable true") {
		t.Errorf("adopting an extractable key: %v %s", err, out)
	}
	if out, err := cli("keys", "adopt", "legacy-2", "--uri", "pkcs11:object=legacy-signer", "--purpose", "raw"); err == nil || !strings.Contains(out, `key "legacy"`) {
		t.Errorf("adopting a pair that is a key's already: %v %s", err, out)
	}
	if out, err := cli("keys", "adopt", "legacy-3", "--uri", "pkcs11:object=legacy-signer", "--purpose", "eth"); err == nil {
		t.Errorf("adopting a P-256 pair as an eth key: %s", out)
	}
}
