package e2e_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// sign --batch: JSON lines in, one JSON line out per item in order; a
// bad item fails alone and makes the exit status non-zero; the good
// items' signatures verify.
func TestSignBatchFromTheCLI(t *testing.T) {
	framework.RequireTools(t)
	bin := framework.Build(t)
	dir := t.TempDir()
	data := filepath.Join(dir, ".sigil-dev")
	srv := framework.ServeDev(t, bin, data)
	defer srv.Stop(t)
	cli := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(bin, append(args, "--data-dir", data)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		return string(out), err
	}
	out, err := cli("", "keys", "create", "batch-key", "--alg", "ES256", "--json")
	var k struct {
		Generations []struct {
			PublicKeyPEM string `json:"public_key_pem"`
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &k) != nil {
		t.Fatalf("keys create: %v %s", err, out)
	}
	pub, err := signer.ParsePublicKeyPEM(k.Generations[0].PublicKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var digests [][]byte
	for i := range 5 {
		d := sha256.Sum256([]byte(fmt.Sprint("item ", i)))
		digests = append(digests, d[:])
		lines = append(lines, fmt.Sprintf(`{"digest":%q}`, hex.EncodeToString(d[:])))
	}
	lines[2] = `{"key":"no-such-key","digest":"` + hex.EncodeToString(digests[2]) + `"}`
	os.WriteFile(filepath.Join(dir, "batch.jsonl"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	out, err = cli("", "sign", "--key", "batch-key", "--batch", filepath.Join(dir, "batch.jsonl"))
	if err == nil {
		t.Fatal("a batch with a failed item exited 0")
	}
	results := strings.Split(strings.TrimSpace(out), "\n")
	if len(results) != 5 {
		t.Fatalf("%d result lines for 5 items:\n%s", len(results), out)
	}
	for i, line := range results {
		var r struct{ Signature, Error string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v %s", i, err, line)
		}
		if i == 2 {
			if !strings.HasPrefix(r.Error, "NotFound") {
				t.Errorf("the item of a key that does not exist: %s", line)
			}
			continue
		}
		sig, _ := base64.StdEncoding.DecodeString(r.Signature)
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digests[i], sig) {
			t.Errorf("item %d: the signature does not verify: %s", i, line)
		}
	}
	// From standard input, all good: exit 0.
	good := strings.Join([]string{lines[0], lines[1]}, "\n")
	if out, err := cli(good, "sign", "--key", "batch-key", "--batch", "-"); err != nil || strings.Count(out, "signature") != 2 {
		t.Errorf("a good batch from standard input: %v %s", err, out)
	}
}
