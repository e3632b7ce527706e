package e2e_test

import (
	"context"
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
	w := newEtcdWorld(t, framework.Build(t), 1, "keys.admin, keys.read, eth.sign_tx", ", health_interval: 250ms")
	cluster, pki, srv := w.cluster, w.pki, w.replicas[0]
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
