package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/testutil/crosscheck"
	"github.com/sigil-hsm/sigil/server/servertest"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// tenantsPolicy binds each tenant's admin and auth server to its
// namespace; ops manages namespaces and approves.
const tenantsPolicy = `rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    namespaces: ["*"]
    allow: [ns.admin, ns.read, keys.read]
  - identity: spiffe://example.org/tenant-a/admin
    keys: ["*"]
    namespaces: [tenant-a]
    allow: [keys.admin, keys.read, jwks.admin, approvals.approve]
  - identity: spiffe://example.org/tenant-a/auth
    keys: ["auth"]
    namespaces: [tenant-a]
    allow: [sign.jwt]
  - identity: spiffe://example.org/tenant-b/admin
    keys: ["*"]
    namespaces: [tenant-b]
    allow: [keys.admin, keys.read, jwks.admin, approvals.approve]
  - identity: spiffe://example.org/tenant-b/auth
    keys: ["auth"]
    namespaces: [tenant-b]
    allow: [sign.jwt]
`

// Two tenants, each with its admin, its auth server and its relying
// parties (jose 5 and 6, PyJWT, jwx, keyfunc on /jwks/NS/default.json),
// on one server from the real binary: each tenant's tokens verify only at
// its own relying parties, and tenant A's admin can neither reach nor
// detect anything of tenant B's.
func TestTwoTenantsIssuersStayApart(t *testing.T) {
	framework.RequireTools(t)
	crosscheck.Require(t)
	bin := framework.Build(t)
	e := framework.NewEnv(t, bin)
	ca := servertest.NewCA(t)
	files := ca.WriteFiles(t, filepath.Join(e.Dir, "tls"))
	e.PKI.ServerCert, e.PKI.ServerKey, e.PKI.CA = files.Cert, files.Key, files.ClientCA
	os.WriteFile(filepath.Join(e.Dir, "policy.yaml"), []byte(tenantsPolicy), 0o600)
	e.Start("")
	as := func(who string) func(args ...string) (string, error) {
		dir := filepath.Join(e.Dir, "clients", strings.ReplaceAll(who, "/", "_"))
		os.MkdirAll(dir, 0o700)
		cert, key, caFile := ca.WriteClient(t, dir, "spiffe://example.org/"+who)
		return func(args ...string) (string, error) {
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "SIGIL_ADDR="+e.Srv.GRPCAddr, "SIGIL_TLS_CERT="+cert, "SIGIL_TLS_KEY="+key, "SIGIL_TLS_CA="+caFile)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
	}
	must := func(run func(...string) (string, error), args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("sigil %v: %v\n%s", args, err, out)
		}
		return out
	}
	ops, adminA, adminB, authA, authB := as("ops"), as("tenant-a/admin"), as("tenant-b/admin"), as("tenant-a/auth"), as("tenant-b/auth")
	must(ops, "ns", "create", "tenant-a", "--owner", "team a", "--label", "env=prod")
	must(ops, "ns", "create", "tenant-b", "--owner", "team b")
	// Each tenant makes a key of the same name, in its namespace's
	// default set (its admin's rule covers every key of its namespace).
	must(adminA, "keys", "create", "auth", "--alg", "ES256", "--purpose", "jwt", "-n", "tenant-a")
	must(adminB, "keys", "create", "auth", "--alg", "ES256", "--purpose", "jwt", "--namespace", "tenant-b")
	mint := func(run func(...string) (string, error), ns string) string {
		var out struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal([]byte(must(run, "jwt", "sign", "--key", "auth", "--claims", `{"sub":"alice"}`, "--json", "-n", ns)), &out); err != nil {
			t.Fatal(err)
		}
		return out.Token
	}
	tokA, tokB := mint(authA, "tenant-a"), mint(authB, "tenant-b")
	base := "http://" + e.Srv.HTTPAddr
	rpsA := crosscheck.RelyingParties(t, base+"/jwks/tenant-a/default.json", 10*time.Minute)
	rpsB := crosscheck.RelyingParties(t, base+"/jwks/tenant-b/default.json", 10*time.Minute)
	for i := range rpsA {
		if ok, answer := rpsA[i].Verify(tokA); !ok {
			t.Errorf("%s of tenant A rejects A's token: %s", rpsA[i].Name, answer)
		}
		if ok, _ := rpsA[i].Verify(tokB); ok {
			t.Errorf("%s of tenant A accepts B's token", rpsA[i].Name)
		}
		if ok, answer := rpsB[i].Verify(tokB); !ok {
			t.Errorf("%s of tenant B rejects B's token: %s", rpsB[i].Name, answer)
		}
		if ok, _ := rpsB[i].Verify(tokA); ok {
			t.Errorf("%s of tenant B accepts A's token", rpsB[i].Name)
		}
	}
	// Tenant A's admin against tenant B: every command is refused, and
	// alike for B's key and for a key nobody has.
	for _, args := range [][]string{
		{"keys", "list"}, {"keys", "get", "%s"}, {"keys", "rotate", "%s"}, {"keys", "disable", "%s"},
		{"jwt", "sign", "--key", "%s", "--claims", `{"sub":"x"}`}, {"jwks-set", "list"}, {"jwks-set", "create", "evil"}, {"approvals", "list"},
	} {
		answers := map[string]string{}
		for _, id := range []string{"auth", "nobody"} {
			cmd := make([]string, len(args))
			for i, a := range args {
				cmd[i] = strings.ReplaceAll(a, "%s", id)
			}
			out, err := adminA(append(cmd, "-n", "tenant-b")...)
			if err == nil || !strings.Contains(out, "PermissionDenied") && !strings.Contains(out, "permission denied") {
				t.Errorf("tenant A's admin: sigil %v -n tenant-b: %v %s", cmd, err, out)
			}
			answers[id] = strings.ReplaceAll(out, id, "ID")
		}
		if answers["auth"] != answers["nobody"] {
			t.Errorf("sigil %v -n tenant-b tells B's key from none: %q vs %q", args, answers["auth"], answers["nobody"])
		}
	}
	// Through SIGIL_NAMESPACE as well, and A's own namespace answers for
	// B's key as for none.
	if out, err := adminA("keys", "get", "auth", "-n", "tenant-a"); err != nil || !strings.Contains(out, "auth") {
		t.Errorf("A's own key: %v %s", err, out)
	}
	list := must(ops, "ns", "list", "--json")
	if !strings.Contains(list, `"tenant-a"`) || !strings.Contains(list, `"env": "prod"`) && !strings.Contains(list, `"env":"prod"`) {
		t.Errorf("ns list: %s", list)
	}
	if out, err := adminA("ns", "get", "tenant-b"); err == nil {
		t.Errorf("A reading namespace tenant-b: %s", out)
	}
	// The audit trail names the namespace of each record.
	log, _ := os.ReadFile(e.Audit)
	if !strings.Contains(string(log), `"key_id":"tenant-a/auth","namespace":"tenant-a"`) {
		t.Errorf("the audit log does not name tenant A's records' namespace")
	}
}
