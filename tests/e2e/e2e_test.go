// Package e2e_test runs the sigil binary as operators do (tests/framework):
// the quickstart with openssl, JWTs checked by the npm jose package and the
// rotation drill, kill -9 at every lifecycle step, a token outage, the
// audit trail under hostile input and a full disk, two replicas over etcd,
// and secrets that must never appear in any output.
package e2e_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/testutil/crosscheck"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// opensslVerify is how an operator checks a signature (README quickstart).
var opensslVerify = map[string][]string{
	"ES256":  {"dgst", "-sha256"},
	"ES384":  {"dgst", "-sha384"},
	"ES256K": {"dgst", "-sha256"},
	"RS256":  {"dgst", "-sha256"},
	"PS256":  {"dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"},
	"EdDSA":  {"pkeyutl", "-rawin"},
}

func TestDevServerQuickstartWithOpenSSL(t *testing.T) {
	framework.RequireTools(t, "openssl")
	bin := framework.Build(t)
	dir := t.TempDir()
	data := filepath.Join(dir, ".sigil-dev")
	msg := filepath.Join(dir, "msg.txt")
	os.WriteFile(msg, []byte("signed by sigil, verified by openssl\n"), 0o644)
	stop := framework.DevServer(t, bin, data)

	pems := map[string]string{}
	for alg, verify := range opensslVerify {
		id := "k-" + strings.ToLower(alg)
		var key framework.KeyJSON
		if err := json.Unmarshal([]byte(framework.Run(t, bin, "keys", "create", id, "--alg", alg, "--purpose", "raw", "--data-dir", data, "--json")), &key); err != nil {
			t.Fatal(err)
		}
		if key.ID != id || key.Alg != alg || len(key.Generations) != 1 || key.Generations[0].State != "active" || key.Generations[0].KID == "" {
			t.Fatalf("keys create --json: %+v", key)
		}
		pub := filepath.Join(dir, id+".pem")
		os.WriteFile(pub, []byte(key.Generations[0].PublicKeyPEM), 0o644)
		pems[id] = key.Generations[0].PublicKeyPEM
		sigB64 := strings.TrimSpace(framework.Run(t, bin, "sign", "--key", id, "--message-file", msg, "--data-dir", data))
		sig, err := base64.StdEncoding.DecodeString(sigB64)
		if err != nil {
			t.Fatalf("%s: signature is not standard base64: %v", alg, err)
		}
		sigFile := filepath.Join(dir, id+".sig")
		os.WriteFile(sigFile, sig, 0o644)
		args := append(append([]string{}, verify...), "-verify", pub, "-signature", sigFile, msg)
		if verify[0] == "pkeyutl" {
			args = append(append([]string{}, verify...), "-verify", "-pubin", "-inkey", pub, "-sigfile", sigFile, "-in", msg)
		}
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: openssl %v: %v\n%s", alg, args, err, out)
		}
		if got := framework.Run(t, bin, "verify", "--key", id, "--message-file", msg, "--signature", sigB64, "--data-dir", data); !strings.HasPrefix(got, "valid: generation 1") {
			t.Fatalf("%s: sigil verify: %q", alg, got)
		}
	}
	stop()

	// Keys and their public keys survive a restart.
	stop = framework.DevServer(t, bin, data)
	defer stop()
	var keys []framework.KeyJSON
	if err := json.Unmarshal([]byte(framework.Run(t, bin, "keys", "list", "--data-dir", data, "--json")), &keys); err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(opensslVerify)+1 || keys[len(keys)-1].ID != "sigil.audit" {
		t.Fatalf("%d keys after restart, want %d and the audit key", len(keys), len(opensslVerify))
	}
	for _, k := range keys[:len(keys)-1] {
		if k.Generations[0].PublicKeyPEM != pems[k.ID] {
			t.Errorf("%s: public key changed across the restart", k.ID)
		}
	}
	framework.Run(t, bin, "sign", "--key", "k-es256", "--digest", strings.Repeat("ab", 32), "--data-dir", data)
	// Errors: a one-line message on stderr and a non-zero exit.
	cmd := exec.Command(bin, "sign", "--key", "missing", "--digest", "00", "--data-dir", data)
	out, err := cmd.CombinedOutput()
	if err == nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || !strings.Contains(string(out), "NotFound") {
		t.Fatalf("error output %q, err %v", out, err)
	}
}

func TestJWTsVerifyWithJoseAndTheDrillPasses(t *testing.T) {
	framework.RequireTools(t)
	crosscheck.Require(t)
	bin := framework.Build(t)
	dir := t.TempDir()
	data := filepath.Join(dir, ".sigil-dev")
	defer framework.DevServer(t, bin, data)()
	dc, err := devmode.ReadClient(data)
	if err != nil {
		t.Fatal(err)
	}

	// ES256K keys go to a set made for them; every other key to the
	// default set, which stays free of secp256k1.
	framework.Run(t, bin, "jwks-set", "create", "chain", "--allow-es256k", "--keys", "jwt-es256k", "--data-dir", data)
	var tokens []string
	var k1Token string
	for alg := range opensslVerify {
		id := "jwt-" + strings.ToLower(alg)
		args := []string{"keys", "create", id, "--alg", alg, "--purpose", "jwt", "--max-token-ttl", "5m", "--data-dir", data}
		if alg == "ES256K" {
			args = append(args, "--jwks-set", "chain")
		}
		framework.Run(t, bin, args...)
		tok := strings.TrimSpace(framework.Run(t, bin, "jwt", "sign", "--key", id, "--claims", `{"sub":"alice","aud":"api"}`, "--data-dir", data))
		if alg == "ES256K" {
			k1Token = tok
		} else {
			tokens = append(tokens, tok)
		}
	}
	var sets []struct {
		Name string   `json:"name"`
		Keys []string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(framework.Run(t, bin, "jwks-set", "list", "--json", "--data-dir", data)), &sets); err != nil || len(sets) != 2 ||
		sets[0].Name != "default" || len(sets[0].Keys) != len(tokens) || sets[1].Name != "chain" || fmt.Sprint(sets[1].Keys) != "[jwt-es256k]" {
		t.Fatalf("jwks-set list: %+v %v", sets, err)
	}
	file := filepath.Join(dir, "tokens.txt")
	os.WriteFile(file, []byte(strings.Join(tokens, "\n")+"\n"), 0o600)
	jwksURL := "http://" + dc.HTTPAddr + "/.well-known/jwks.json"
	if out := crosscheck.Run(t, "verify-jwt.mjs", jwksURL, file); !strings.Contains(string(out), fmt.Sprintf("verified %d", len(tokens))) {
		t.Fatalf("jose: %s", out)
	}
	k1File := filepath.Join(dir, "k1.txt")
	os.WriteFile(k1File, []byte(k1Token+"\n"), 0o600)
	if out := crosscheck.Run(t, "verify-jwt.mjs", "http://"+dc.HTTPAddr+"/jwks/chain.json", k1File); !strings.Contains(string(out), "verified 1") {
		t.Fatalf("jose, ES256K from its set: %s", out)
	}
	// A token altered after signing fails there too.
	parts := strings.Split(tokens[0], ".")
	os.WriteFile(file, []byte(parts[0]+"."+parts[1]+"x."+parts[2]+"\n"), 0o600)
	if crosscheck.Try(t, "verify-jwt.mjs", jwksURL, file) {
		t.Fatal("jose accepted an altered token")
	}

	framework.Run(t, bin, "keys", "create", "drill", "--alg", "ES256", "--purpose", "jwt", "--rotate-every", "3s", "--publish-ahead", "1500ms",
		"--max-token-ttl", "1s", "--skew", "250ms", "--data-dir", data)
	got := framework.Run(t, bin, "drill", "rotate", "--key", "drill", "--periods", "2", "--data-dir", data)
	var minted, verified, failed int
	if _, err := fmt.Sscanf(got, "minted %d verified %d failed %d", &minted, &verified, &failed); err != nil || failed != 0 || minted < 20 || verified != minted {
		t.Fatalf("drill: %q %v", got, err)
	}
}
