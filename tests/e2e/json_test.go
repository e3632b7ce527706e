package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/testutil/backendtest"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// Every client command prints one JSON object (or a list) under --json.
func TestEveryCommandPrintsJSON(t *testing.T) {
	framework.RequireTools(t)
	bin := framework.Build(t)
	dir := t.TempDir()
	data := filepath.Join(dir, ".sigil-dev")
	defer framework.DevServer(t, bin, data)()
	typed := filepath.Join(dir, "typed.json")
	os.WriteFile(typed, []byte(backendtest.MailTypedData), 0o600)
	msg := filepath.Join(dir, "msg.txt")
	os.WriteFile(msg, []byte("hello"), 0o600)
	tx := `{"chainId":"0x1","nonce":"0x0","to":"0x3535353535353535353535353535353535353535","value":"0x1","gas":"0x5208","maxFeePerGas":"0x2","maxPriorityFeePerGas":"0x1"}`
	var sig string
	for _, args := range [][]string{
		{"keys", "create", "r1", "--alg", "ES256"},
		{"keys", "create", "j1", "--alg", "ES256", "--purpose", "jwt"},
		{"keys", "create", "w1", "--alg", "ES256K", "--purpose", "eth", "--chain-ids", "1"},
		{"keys", "get", "r1"}, {"keys", "list"}, {"keys", "policy", "j1", "--skew", "2m"},
		{"keys", "rotate", "r1"}, {"keys", "revoke", "j1", "--generation", "1"}, // r1's first would retire at the next sweep (300 ms here): a race on a slow machine
		{"keys", "disable", "r1"}, {"keys", "enable", "r1"},
		{"keys", "label", "r1", "team=a"}, {"keys", "unlabel", "r1", "team"},
		{"keys", "schedule-deletion", "j1", "--window", "7d"}, {"keys", "cancel-deletion", "j1"},
		{"sign", "--key", "r1", "--message-file", msg},
		{"verify", "--key", "r1", "--message-file", msg, "--signature", "SIG"},
		{"jwt", "sign", "--key", "j1", "--claims", `{"sub":"a"}`},
		{"jwks-set", "create", "t1"}, {"jwks-set", "list"},
		{"eth", "address", "--key", "w1"}, {"eth", "sign-tx", "--key", "w1", "--tx", tx},
		{"eth", "sign-message", "--key", "w1", "--message", "hello"}, {"eth", "sign-typed-data", "--key", "w1", "--file", typed},
	} {
		for i, a := range args {
			if a == "SIG" {
				args[i] = sig
			}
		}
		var stderr strings.Builder
		cmd := exec.Command(bin, append(args, "--json", "--data-dir", data)...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("sigil %v: %v: %s", args, err, stderr.String())
			continue
		}
		var v any
		trimmed := strings.TrimSpace(string(out))
		if json.Unmarshal(out, &v) != nil || (trimmed[0] != '{' && trimmed[0] != '[') {
			t.Errorf("sigil %v --json printed %q", args, out)
		}
		if args[0] == "sign" {
			var s struct {
				Signature string `json:"signature"`
			}
			json.Unmarshal(out, &s)
			sig = s.Signature
		}
	}
	if out, err := exec.Command(bin, "version", "--json").Output(); err != nil || !json.Valid(out) {
		t.Errorf("version --json: %q %v", out, err)
	}
}
