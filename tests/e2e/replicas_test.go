package e2e_test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/tests/framework"
)

// Two `sigil serve --config` processes share a keyring in etcd and one
// SoftHSM token folder, as replicas share an HSM partition: a key created
// through one is found, on first use, by the other.
func TestTwoReplicasOverEtcd(t *testing.T) {
	framework.RequireTools(t)
	bin := framework.Build(t)
	w := newEtcdWorld(t, bin, 2, "keys.admin, keys.read, sign.raw", "")
	pki := w.pki
	addrs := []string{w.replicas[0].GRPCAddr, w.replicas[1].GRPCAddr}
	client := func(i int, args ...string) (string, error) {
		out, err := exec.Command(bin, append(args, "--addr", addrs[i], "--tls-cert", pki.ClientCert, "--tls-key", pki.ClientKey, "--tls-ca", pki.CA)...).CombinedOutput()
		return string(out), err
	}
	if out, err := client(0, "keys", "create", "shared-1", "--alg", "ES256"); err != nil {
		t.Fatalf("create on replica 0: %v %s", err, out)
	}
	var out string
	var err error
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
	out, err = client(0, "audit", "verify", w.auditLog(0), w.auditLog(1))
	if err != nil || !strings.Contains(out, "replicas: r0, r1") {
		t.Fatalf("audit verify of both replicas: %v %s", err, out)
	}
	if out, err = client(0, "audit", "verify", w.auditLog(0)); err == nil || !strings.Contains(out, "replica r1: no files given") {
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
