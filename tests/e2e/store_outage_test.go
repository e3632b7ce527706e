package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// etcd, the keyring store, stops while treasury clients sign
// transactions with 30 s deadlines: every call ends Unavailable within
// 2 s (never DeadlineExceeded, no handler pinned for the client's
// deadline), /readyz is 503 naming the store and sigil_store_up is 0; the
// outage is logged once. etcd back: signing works within 5 s, by itself.
func TestStoreOutageFailsFastAndHeals(t *testing.T) {
	framework.RequireTools(t)
	bin := framework.Build(t)
	dir := t.TempDir()
	cluster := etcdtest.Start(t, 1)
	conf, err := softhsm.WriteConf(filepath.Join(dir, "hsm"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := softhsm.InitToken(conf, filepath.Join(dir, "hsm"), "store-outage")
	if err != nil {
		t.Fatal(err)
	}
	pki, err := mtls.EnsureDevPKI(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policy, []byte("rules:\n  - identity: "+mtls.DevClientIdentity+"\n    keys: [\"*\"]\n    allow: [keys.admin, keys.read, eth.sign_tx]\n"), 0o600)
	cfg := filepath.Join(dir, "sigil.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`grpc: {addr: "127.0.0.1:0", tls: {cert: %s, key: %s, client_ca: %s}}
http: {public_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0"}
store: {type: etcd, endpoints: [%s], prefix: /sigil-outage/, health_interval: 250ms}
audit: {path: %s, replica: r0}
policy: %s
backends:
  hsm: {type: pkcs11, module: %s, token: store-outage, pin: "file:%s"}
`, pki.ServerCert, pki.ServerKey, pki.CA, cluster.Endpoints[0], filepath.Join(dir, "audit.jsonl"), policy, softhsm.Module, tok.PINFile)), 0o600)
	srv := framework.ServeConfig(t, bin, cfg, softhsm.ConfEnv+"="+conf)
	tc, err := mtls.ClientConfig(pki.ClientCert, pki.ClientKey, pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	if _, err := sigilv1.NewKeyServiceClient(conn).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "hot", Purpose: "eth", Algorithm: "ES256K", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}}); err != nil {
		t.Fatalf("%v\n%s", err, srv.Logs.String())
	}
	eth := sigilv1.NewEthereumServiceClient(conn)
	var nonce atomic.Int64
	signTx := func() (codes.Code, time.Duration, error) {
		n := nonce.Add(1) - 1
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		start := time.Now()
		_, err := eth.SignTransaction(cctx, &sigilv1.SignTransactionRequest{KeyId: "hot",
			Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(txJSON(int(n), "0x1"))}})
		return status.Code(err), time.Since(start), err
	}
	if _, _, err := signTx(); err != nil {
		t.Fatalf("before the outage: %v", err)
	}
	cluster.Kill(0)
	away := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for time.Since(away) < 4*time.Second {
				code, took, err := signTx()
				if code != codes.Unavailable {
					t.Errorf("with etcd gone: %v after %v, want Unavailable", err, took)
					return
				}
				if took > 2*time.Second {
					t.Errorf("a call took %v with etcd gone; want Unavailable within 2 s", took)
					return
				}
			}
		})
	}
	if !withinE(4*time.Second, func() bool { code, _ := get(t, srv.AdminAddr, "/readyz"); return code == 503 }) {
		t.Fatal("/readyz not 503 with etcd gone")
	}
	_, body := get(t, srv.AdminAddr, "/readyz")
	if !strings.Contains(body, `"store":{"up":false,"detail":"no answer within`) {
		t.Errorf("/readyz does not name the store: %s", body)
	}
	if _, m := get(t, srv.AdminAddr, "/metrics"); !strings.Contains(m, "sigil_store_up 0") {
		t.Error("sigil_store_up is not 0 with etcd gone")
	}
	wg.Wait()
	if err := cluster.Restart(0); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if !withinE(5*time.Second, func() bool { code, _, _ := signTx(); return code == codes.OK }) {
		t.Fatalf("not signing 5 s after etcd returned:\n%s", srv.Logs.String())
	}
	t.Logf("signing again %v after etcd returned", time.Since(back).Round(time.Millisecond))
	if !withinE(2*time.Second, func() bool { code, _ := get(t, srv.AdminAddr, "/readyz"); return code == 200 }) {
		t.Fatal("/readyz not back to 200")
	}
	withinE(time.Second, func() bool { return strings.Contains(srv.Logs.String(), `"msg":"store up"`) })
	logs := srv.Logs.String()
	if strings.Count(logs, `"msg":"store down"`) != 1 || strings.Count(logs, `"msg":"store up"`) != 1 {
		t.Errorf("want the outage logged once each way:\n%s", logs)
	}
}
