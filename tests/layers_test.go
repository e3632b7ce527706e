// Package tests holds checks that span the whole module. TestLayers keeps
// the direction of imports that docs/architecture.md describes: a lower
// layer never imports a higher one.
package tests

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/sigil-hsm/sigil/"

// forbidden lists, for each layer (a package path prefix), the packages
// it must never import (prefixes too).
var forbidden = []struct {
	layer string
	not   []string
	why   string
}{
	{"signer", []string{"keyring", "purpose", "jwks", "server", "cmd", "internal/audit", "internal/authz", "internal/identity", "internal/config"},
		"the backend contract and its backends know nothing of keys, purposes or the server"},
	{"keyring", []string{"purpose", "jwks", "server", "cmd", "internal/audit", "internal/authz"},
		"the keyring holds generations and their lifecycle; purposes plug into it and publishing sits above it"},
	{"purpose", []string{"jwks", "server", "cmd"}, "purposes sit below the edge and know nothing of publishing"},
	{"jwks", []string{"server", "cmd"}, "publishing sits below the edge"},
	{"internal/audit", []string{"keyring", "signer", "server", "cmd"}, "the audit log is told what to write, by interfaces"},
	{"server", []string{"purpose/raw", "purpose/jwt", "purpose/eth", "purpose/all", "cmd"},
		"the server knows purposes only through package purpose; the binary chooses them"},
	{"internal/approval", []string{"keyring", "server", "purpose", "cmd"}, "held requests are kept through a small interface, below the keyring"},
	{"client", []string{"server", "keyring", "purpose", "jwks", "cmd", "internal/audit", "internal/authz"},
		"the client speaks the API and nothing of the server's insides"},
}

// testHelpers must never be imported by production code.
var testHelpers = []string{"internal/testutil", "keyring/storetest", "server/servertest"}

// imports returns every package of the module with its (non-test)
// imports, both without the module prefix.
func imports(t *testing.T) map[string][]string {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports ","}}`, "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, deps, _ := strings.Cut(line, "|")
		var own []string
		for _, d := range strings.Split(deps, ",") {
			if strings.HasPrefix(d, module) {
				own = append(own, strings.TrimPrefix(d, module))
			} else if strings.HasPrefix(d, "github.com/ethereum/go-ethereum") {
				own = append(own, d)
			}
		}
		pkgs[strings.TrimPrefix(path, module)] = own
	}
	return pkgs
}

func under(path, prefix string) bool { return path == prefix || strings.HasPrefix(path, prefix+"/") }

func TestLayers(t *testing.T) {
	pkgs := imports(t)
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; is the module there?", len(pkgs))
	}
	for pkg, deps := range pkgs {
		isHelper := false
		for _, h := range testHelpers {
			isHelper = isHelper || under(pkg, h)
		}
		for _, rule := range forbidden {
			if !under(pkg, rule.layer) || isHelper { // a helper wires what its tests need
				continue
			}
			for _, dep := range deps {
				for _, not := range rule.not {
					if under(dep, not) {
						t.Errorf("%s imports %s: %s", pkg, dep, rule.why)
					}
				}
			}
		}
		for _, dep := range deps {
			for _, h := range testHelpers {
				if under(dep, h) && !isHelper && !strings.HasPrefix(pkg, "cmd/sigil-bench") {
					t.Errorf("%s imports the test helper %s", pkg, dep)
				}
			}
		}
		// The contract needs secp256k1's curve from go-ethereum, and no
		// more; the keyring needs none of it.
		for _, dep := range deps {
			switch {
			case !strings.HasPrefix(dep, "github.com/ethereum/"):
			case under(pkg, "signer") && dep != "github.com/ethereum/go-ethereum/crypto",
				under(pkg, "keyring"):
				t.Errorf("%s imports %s: Ethereum logic belongs to purpose/eth", pkg, dep)
			}
		}
	}
}

// A program that only mints JWTs or signs through the Go client does not
// link go-ethereum: the client's Ethereum side is client/eth.
func TestClientLinksNoGoEthereum(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../client").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/ethereum/go-ethereum") {
			t.Errorf("package client links %s (through the imports of one of its dependencies)", pkg)
		}
	}
}
