package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// etcdWorld is `sigil serve --config` replicas over one etcd and one
// SoftHSM token folder, as replicas share an HSM partition, with the dev
// PKI and a policy letting the dev client do allow on every key.
type etcdWorld struct {
	dir, conf string
	cluster   *etcdtest.Cluster
	pki       mtls.DevPKI
	replicas  []*framework.Proc
}

// newEtcdWorld starts n replicas; store adds fields to each one's store
// section (after endpoints and prefix).
func newEtcdWorld(t *testing.T, bin string, n int, allow, store string) *etcdWorld {
	w := &etcdWorld{dir: t.TempDir(), cluster: etcdtest.Start(t, 1)}
	var err error
	if w.conf, err = softhsm.WriteConf(filepath.Join(w.dir, "hsm")); err != nil {
		t.Fatal(err)
	}
	tok, err := softhsm.InitToken(w.conf, filepath.Join(w.dir, "hsm"), "shared")
	if err != nil {
		t.Fatal(err)
	}
	if w.pki, err = mtls.EnsureDevPKI(filepath.Join(w.dir, "tls")); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(w.dir, "policy.yaml")
	os.WriteFile(policy, []byte("rules:\n  - identity: "+mtls.DevClientIdentity+"\n    keys: [\"*\"]\n    allow: ["+allow+"]\n"), 0o600)
	for i := range n {
		cfg := filepath.Join(w.dir, fmt.Sprintf("r%d.yaml", i))
		os.WriteFile(cfg, []byte(fmt.Sprintf(`grpc: {addr: "127.0.0.1:0", tls: {cert: %s, key: %s, client_ca: %s}}
http: {public_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0"}
store: {type: etcd, endpoints: [%s], prefix: /sigil-e2e/%s}
audit: {path: %s, replica: r%d}
policy: %s
backends:
  hsm: {type: pkcs11, module: %s, token: shared, pin: "file:%s"}
`, w.pki.ServerCert, w.pki.ServerKey, w.pki.CA, w.cluster.Endpoints[0], store, w.auditLog(i), i, policy, softhsm.Module, tok.PINFile)), 0o600)
		w.replicas = append(w.replicas, framework.ServeConfig(t, bin, cfg, softhsm.ConfEnv+"="+w.conf))
	}
	return w
}

func (w *etcdWorld) auditLog(i int) string {
	return filepath.Join(w.dir, fmt.Sprintf("audit%d.jsonl", i))
}
