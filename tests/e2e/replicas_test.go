package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// Two `sigil serve --config` processes share a keyring in etcd and one
// SoftHSM token folder, as replicas share an HSM partition: a key created
// through one is found, on first use, by the other.
func TestTwoReplicasOverEtcd(t *testing.T) {
	framework.RequireTools(t)
	bin := framework.Build(t)
	dir := t.TempDir()
	cluster := etcdtest.Start(t, 1)
	conf, err := softhsm.WriteConf(filepath.Join(dir, "hsm"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := softhsm.InitToken(conf, filepath.Join(dir, "hsm"), "shared")
	if err != nil {
		t.Fatal(err)
	}
	pki, err := mtls.EnsureDevPKI(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policy, []byte("rules:\n  - identity: "+mtls.DevClientIdentity+"\n    keys: [\"*\"]\n    allow: [keys.admin, keys.read, sign.raw]\n"), 0o600)
	addrs := make([]string, 2)
	for i := range addrs {
		cfg := filepath.Join(dir, fmt.Sprintf("r%d.yaml", i))
		os.WriteFile(cfg, []byte(fmt.Sprintf(`grpc: {addr: "127.0.0.1:0", tls: {cert: %s, key: %s, client_ca: %s}}
http: {public_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0"}
store: {type: etcd, endpoints: [%s], prefix: /sigil-e2e/}
audit: {path: %s, replica: r%d}
policy: %s
backends:
  hsm: {type: pkcs11, module: %s, token: shared, pin: "file:%s"}
`, pki.ServerCert, pki.ServerKey, pki.CA, cluster.Endpoints[0], filepath.Join(dir, fmt.Sprintf("audit%d.jsonl", i)), i, policy, softhsm.Module, tok.PINFile)), 0o600)
		addrs[i] = framework.ServeConfig(t, bin, cfg, softhsm.ConfEnv+"="+conf).GRPCAddr
	}
	client := func(i int, args ...string) (string, error) {
		out, err := exec.Command(bin, append(args, "--addr", addrs[i], "--tls-cert", pki.ClientCert, "--tls-key", pki.ClientKey, "--tls-ca", pki.CA)...).CombinedOutput()
		return string(out), err
	}
	if out, err := client(0, "keys", "create", "shared-1", "--alg", "ES256"); err != nil {
		t.Fatalf("create on replica 0: %v %s", err, out)
	}
	var out string
	if !withinE(2*time.Second, func() bool {
		out, err = client(1, "sign", "--key", "shared-1", "--digest", strings.Repeat("ab", 32))
		return err == nil
	}) {
		t.Fatalf("sign on replica 1 with a key made on replica 0: %v %s", err, out)
	}
	if out, err := client(1, "keys", "create", "shared-1", "--alg", "ES256"); err == nil || !strings.Contains(out, "AlreadyExists") {
		t.Fatalf("the same ID created on the other replica: %v %s", err, out)
	}
	// Each replica keeps its own chain; verify proves both together,
	// against the heads both anchored in etcd.
	out, err = client(0, "audit", "verify", filepath.Join(dir, "audit0.jsonl"), filepath.Join(dir, "audit1.jsonl"))
	if err != nil || !strings.Contains(out, "replicas: r0, r1") {
		t.Fatalf("audit verify of both replicas: %v %s", err, out)
	}
	if out, err = client(0, "audit", "verify", filepath.Join(dir, "audit0.jsonl")); err == nil || !strings.Contains(out, "replica r1: no files given") {
		t.Fatalf("audit verify without one replica's files: %v %s", err, out)
	}
}

func withinE(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}
