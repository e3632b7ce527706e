package e2e_test

import (
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/internal/testutil/crosscheck"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// importWorld is a dev server and what an operator importing into it
// uses: the CLI, openssl, pkcs11-tool on its token, and docs/import.md's
// wrapping commands.
type importWorld struct {
	t         *testing.T
	bin, dir  string
	data, pin string
	wrap      string // docs/import.md's wrapping block, without its first line (KEY=… PARAMS=…)
}

func newImportWorld(t *testing.T) *importWorld {
	framework.RequireTools(t, "pkcs11-tool", "openssl")
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "import.md"))
	if err != nil {
		t.Fatal(err)
	}
	w := &importWorld{t: t, bin: framework.Build(t), dir: t.TempDir()}
	for _, b := range runnableBlocks(string(doc)) {
		if strings.Contains(b, "id-aes256-wrap-pad") {
			first, rest, _ := strings.Cut(b, "\n")
			if !strings.HasPrefix(first, "KEY=") {
				t.Fatalf("docs/import.md's wrapping block starts %q, not KEY=… PARAMS=…", first)
			}
			w.wrap = rest
		}
	}
	if w.wrap == "" {
		t.Fatal("docs/import.md has no wrapping block")
	}
	w.data = filepath.Join(w.dir, ".sigil-dev")
	srv := framework.ServeDev(t, w.bin, w.data)
	t.Cleanup(func() { srv.Stop(t) })
	pin, err := os.ReadFile(filepath.Join(w.data, "softhsm", devmode.TokenLabel+".pin"))
	if err != nil {
		t.Fatal(err)
	}
	w.pin = strings.TrimSpace(string(pin))
	return w
}

func (w *importWorld) path(name string) string { return filepath.Join(w.dir, name) }

func (w *importWorld) cli(args ...string) (string, error) {
	out, err := exec.Command(w.bin, append(args, "--data-dir", w.data)...).CombinedOutput()
	return string(out), err
}

func (w *importWorld) sh(script string, env ...string) string {
	w.t.Helper()
	cmd := exec.Command("bash", "-eo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = w.dir, append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// p11 lists the token's objects of type typ (privkey, pubkey) as
// pkcs11-tool prints them.
func (w *importWorld) p11(typ string) string {
	w.t.Helper()
	cmd := exec.Command("pkcs11-tool", "--module", softhsm.Module, "--token-label", devmode.TokenLabel, "--login", "--pin", w.pin, "--list-objects", "--type", typ)
	cmd.Env = append(os.Environ(), softhsm.ConfEnv+"="+filepath.Join(w.data, "softhsm", "softhsm2.conf"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("pkcs11-tool: %v\n%s", err, out)
	}
	return string(out)
}

// objectsLabelled is how many objects of the token carry label.
func (w *importWorld) objectsLabelled(label string) int {
	return strings.Count(w.p11("privkey")+w.p11("pubkey"), "label:      "+label+"\n")
}

// newKey makes a private key with openssl (genpkey args), as the key an
// operator brings, and its public key; it returns their file names.
func (w *importWorld) newKey(name, genpkey string) (string, string) {
	w.sh(fmt.Sprintf("openssl genpkey %s -out %s.pem && openssl pkey -in %s.pem -pubout -out %s.pub.pem", genpkey, name, name, name))
	return name + ".pem", name + ".pub.pem"
}

// params asks for import parameters of id into folder id.params.
func (w *importWorld) params(id, alg string, extra ...string) string {
	w.t.Helper()
	dir := id + ".params"
	if out, err := w.cli(append([]string{"keys", "import-params", id, "--alg", alg, "--out-dir", w.path(dir)}, extra...)...); err != nil {
		w.t.Fatalf("import-params %s: %v %s", id, err, out)
	}
	return dir
}

// wrapKey runs the documented wrapping of key to params; the result is
// params/wrapped.bin.
func (w *importWorld) wrapKey(key, params string) string {
	w.sh(w.wrap, "KEY="+key, "PARAMS="+params)
	return filepath.Join(params, "wrapped.bin")
}

func (w *importWorld) importKey(id, alg, params, wrapped, pub string, extra ...string) (string, error) {
	token, _ := os.ReadFile(w.path(filepath.Join(params, "token")))
	return w.cli(append([]string{"keys", "import", id, "--alg", alg, "--wrapped", w.path(wrapped), "--import-token", strings.TrimSpace(string(token)),
		"--public-key", w.path(pub)}, extra...)...)
}

// verifies signs a message with key id through Sigil and verifies it
// with openssl and the original public key pub.
func (w *importWorld) verifies(id, pub string) {
	w.t.Helper()
	os.WriteFile(w.path("msg.txt"), []byte("imported "+id+"\n"), 0o600)
	w.sh(fmt.Sprintf("%s sign --key %s --message-file msg.txt --data-dir %s | base64 -d > msg.sig && openssl dgst -sha256 -verify %s -signature msg.sig msg.txt | grep -q 'Verified OK'",
		w.bin, id, w.data, pub))
}

// Keys made by openssl outside Sigil (ES256, RS256, ES256K), wrapped with
// docs/import.md's commands and imported into SoftHSM, sign as their
// originals: openssl verifies with the original public key, the ES256K
// key's address is the one ethers derives from the original private key,
// and a message it signs recovers to it; the token holds the imported
// private keys sensitive and never extractable, and no wrapping key.
func TestImportedKeysSignAsTheirOriginals(t *testing.T) {
	crosscheck.Require(t)
	w := newImportWorld(t)
	for _, c := range []struct{ id, alg, genpkey, purpose string }{
		{"imp-es256", "ES256", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256", "raw"},
		{"imp-rs256", "RS256", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048", "jwt"},
		{"imp-k1", "ES256K", "-algorithm EC -pkeyopt ec_paramgen_curve:secp256k1", "raw"},
	} {
		key, pub := w.newKey(c.id, c.genpkey)
		params := w.params(c.id, c.alg)
		if out, err := w.importKey(c.id, c.alg, params, w.wrapKey(key, params), pub, "--purpose", c.purpose); err != nil {
			t.Fatalf("import %s: %v %s", c.id, err, out)
		}
		out, err := w.cli("keys", "get", c.id, "--json")
		var k struct{ Origin string }
		if err != nil || json.Unmarshal([]byte(out), &k) != nil || k.Origin != "imported" {
			t.Fatalf("keys get %s: %v %s", c.id, err, out)
		}
		if c.purpose == "raw" {
			w.verifies(c.id, pub)
		}
		if n := w.objectsLabelled(c.id + ".import"); n != 0 {
			t.Errorf("%s: %d objects of the wrapping key left in the token", c.id, n)
		}
	}
	if out, err := w.cli("jwt", "sign", "--key", "imp-rs256", "--claims", `{"sub":"imported"}`); err != nil || strings.Count(out, ".") != 2 {
		t.Errorf("a JWT from the imported RS256 key: %v %s", err, out)
	}
	privs := w.p11("privkey")
	for _, id := range []string{"imp-es256", "imp-rs256", "imp-k1"} {
		i := strings.Index(privs, "label:      "+id+".g1\n")
		if i < 0 {
			t.Fatalf("no private key %s.g1 in the token:\n%s", id, privs)
		}
		obj := privs[i:]
		if j := strings.Index(obj[1:], "Private Key Object"); j > 0 {
			obj = obj[:j]
		}
		// Sensitive and not extractable; and, the token says too, not
		// made in it: not "never extractable", not "local".
		_, access, _ := strings.Cut(obj, "Access:")
		access, _, _ = strings.Cut(access, "\n")
		if flags := strings.Split(strings.TrimSpace(access), ", "); !slices.Contains(flags, "sensitive") || slices.Contains(flags, "extractable") ||
			slices.Contains(flags, "never extractable") || slices.Contains(flags, "local") {
			t.Errorf("%s.g1 as pkcs11-tool shows it (want sensitive, not extractable, not local):\n%s", id, obj)
		}
	}

	// The ES256K key as an Ethereum key: its address is the original's.
	key, pub := w.newKey("imp-eth", "-algorithm EC -pkeyopt ec_paramgen_curve:secp256k1")
	params := w.params("imp-eth", "ES256K")
	if out, err := w.importKey("imp-eth", "ES256K", params, w.wrapKey(key, params), pub, "--purpose", "eth", "--chain-ids", "1"); err != nil {
		t.Fatalf("import imp-eth: %v %s", err, out)
	}
	out, err := w.cli("keys", "get", "imp-eth", "--json")
	var k struct{ Address string }
	if err != nil || json.Unmarshal([]byte(out), &k) != nil {
		t.Fatalf("keys get imp-eth: %v %s", err, out)
	}
	want := strings.TrimSpace(string(crosscheck.Run(t, "eth-address.mjs", "0x"+secp256k1Scalar(t, w.path(key)))))
	if !strings.EqualFold(k.Address, want) || want == "" {
		t.Errorf("the imported key's address %s, ethers derives %s from the original private key", k.Address, want)
	}
	// What the key signed before is unknown: fenced until reconciled.
	tx := `{"to":"0x3535353535353535353535353535353535353535","value":"0x1","nonce":"0x0","gas":"0x5208","maxFeePerGas":"0x3b9aca00","maxPriorityFeePerGas":"0x1","chainId":"0x1"}`
	if out, err := w.cli("eth", "sign-tx", "--key", "imp-eth", "--tx", tx); err == nil || !strings.Contains(out, "fenced") {
		t.Errorf("an imported eth key signed before it was reconciled: %v %s", err, out)
	}
	// One pair, one key: the same private key under a second ID is refused.
	params = w.params("imp-eth-twin", "ES256K")
	if out, err := w.importKey("imp-eth-twin", "ES256K", params, w.wrapKey(key, params), pub, "--purpose", "eth", "--chain-ids", "1"); err == nil || !strings.Contains(out, `as key "imp-eth" already`) {
		t.Errorf("the same key imported under a second ID: %v %s", err, out)
	}
}

// secp256k1Scalar reads the private scalar of an openssl PKCS#8 secp256k1
// key, in hex (Go's x509 does not know the curve).
func secp256k1Scalar(t *testing.T, file string) string {
	t.Helper()
	b, _ := os.ReadFile(file)
	blk, _ := pem.Decode(b)
	var p8 struct {
		Version int
		Alg     asn1.RawValue
		Key     []byte
	}
	var ec struct {
		Version int
		Key     []byte
	}
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	if _, err := asn1.Unmarshal(blk.Bytes, &p8); err != nil {
		t.Fatal(err)
	}
	if _, err := asn1.Unmarshal(p8.Key, &ec); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%064x", ec.Key)
}

// What an import refuses, each leaving nothing in the token: a tampered
// wrapped key; a private key of another curve sent with a public key of
// the right one; a public key that is not the private key's; a used
// token, and a wrong one; parameters for another algorithm; an import as
// a new generation of an Ethereum key. A JWT key that exists takes an
// imported key as its next generation.
func TestImportRefusals(t *testing.T) {
	w := newImportWorld(t)
	key, pub := w.newKey("p256", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256")
	other, otherPub := w.newKey("other", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256")
	p384, _ := w.newKey("p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384")
	_ = other
	refused := func(what, id, want string, out string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("%s: %v %s (want an error saying %q)", what, err, out, want)
		}
		wrapping := 0 // a wrong token leaves the parameters to their holder
		if strings.Contains(want, "not the one given") {
			wrapping = 2
		}
		if n := w.objectsLabelled(id + ".g1"); n != 0 {
			t.Errorf("%s: %d objects of the key left in the token", what, n)
		}
		if n := w.objectsLabelled(id + ".import"); n != wrapping {
			t.Errorf("%s: %d objects of the wrapping key in the token, want %d", what, n, wrapping)
		}
		if out, err := w.cli("keys", "get", id); err == nil {
			t.Errorf("%s: the key exists: %s", what, out)
		}
	}

	params := w.params("tampered", "ES256")
	wrapped := w.wrapKey(key, params)
	b, _ := os.ReadFile(w.path(wrapped))
	b[len(b)-5] ^= 0x40 // in the AES-wrapped private key
	os.WriteFile(w.path(wrapped), b, 0o600)
	out, err := w.importKey("tampered", "ES256", params, wrapped, pub)
	refused("a tampered wrapped key", "tampered", "does not unwrap", out, err)

	params = w.params("curve", "ES256")
	out, err = w.importKey("curve", "ES256", params, w.wrapKey(p384, params), pub)
	refused("a P-384 private key sent as ES256", "curve", "not on the curve", out, err)

	params = w.params("mismatch", "ES256")
	out, err = w.importKey("mismatch", "ES256", params, w.wrapKey(key, params), otherPub)
	refused("another key's public key", "mismatch", "not the private key of the public key given", out, err)
	out, err = w.importKey("mismatch", "ES256", params, filepath.Join(params, "wrapped.bin"), pub)
	refused("the parameters again after an import", "mismatch", "no import parameters", out, err)

	params = w.params("token", "ES256")
	wrapped = w.wrapKey(key, params)
	os.WriteFile(w.path(filepath.Join(params, "token")), []byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 0o600)
	out, err = w.importKey("token", "ES256", params, wrapped, pub)
	refused("a wrong token", "token", "not the one given", out, err)

	params = w.params("alg", "ES384")
	out, err = w.importKey("alg", "ES256", params, w.wrapKey(key, params), pub)
	refused("parameters for ES384 used for ES256", "alg", "are for ES384", out, err)

	if out, err := w.cli("keys", "create", "eth-key", "--alg", "ES256K", "--purpose", "eth", "--chain-ids", "1"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := w.cli("keys", "import-params", "eth-key", "--alg", "ES256K", "--out-dir", w.path("eth.params")); err != nil {
		t.Fatal(err, out)
	}
	if out, err := w.importKey("eth-key", "ES256K", "eth.params", "p256.pem", "p256.pub.pem"); err == nil || !strings.Contains(out, "do not rotate") {
		t.Errorf("an import into an Ethereum key: %v %s", err, out)
	}

	// Into a JWT key that exists: its next generation, origin imported.
	if out, err := w.cli("keys", "create", "auth", "--alg", "ES256", "--purpose", "jwt"); err != nil {
		t.Fatal(err, out)
	}
	params = w.params("auth", "ES256")
	if out, err := w.importKey("auth", "ES256", params, w.wrapKey(key, params), pub); err != nil {
		t.Fatalf("an import into a JWT key: %v %s", err, out)
	}
	out, err = w.cli("keys", "get", "auth", "--json")
	var k struct {
		Origin      string
		Generations []struct {
			Generation   int
			Origin       string
			PublicKeyPEM string `json:"public_key_pem"`
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &k) != nil || len(k.Generations) != 2 || k.Origin != "generated" || k.Generations[1].Origin != "imported" {
		t.Fatalf("the JWT key after an import: %v %s", err, out)
	}
	orig, _ := os.ReadFile(w.path(pub))
	if strings.TrimSpace(k.Generations[1].PublicKeyPEM) != strings.TrimSpace(string(orig)) {
		t.Errorf("generation 2's public key is not the imported key's:\n%s\n%s", k.Generations[1].PublicKeyPEM, orig)
	}
}
