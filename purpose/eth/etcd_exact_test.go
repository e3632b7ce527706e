package eth_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/keyring/etcdstore"
	"github.com/sigil-hsm/sigil/purpose/eth"
)

// Two replicas (etcd clients, their ledger rewrites group-committed) on
// a three-member cluster: 50 concurrent transfers where 10 fit sign
// exactly 10; 40 different transactions for one nonce sign exactly one.
func TestExactOverEtcdReplicas(t *testing.T) {
	e := newEnv(t)
	c := etcdtest.Start(t, 3)
	var signers []*eth.Signer
	for range 2 {
		s, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints, Prefix: "/exact/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		signers = append(signers, &eth.Signer{Ledger: s, Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}
	limit, _ := eth.ParseWei("limit", "10000")
	sg := e.key(t, "daily-etcd", &eth.Policy{ChainIDs: []uint64{1}, DailyLimit: limit})
	pay := `{"chainId":"0x1","nonce":"0x0","to":"` + dest + `","value":"0x3e8","gas":"0x5208","maxFeePerGas":"0x1","maxPriorityFeePerGas":"0x1"}`
	var ok, denied atomic.Int32
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			ui, _ := eth.ParseJSON([]byte(strings.Replace(pay, `"nonce":"0x0"`, fmt.Sprintf(`"nonce":"0x%x"`, i+1), 1)))
			_, err := signers[i%2].SignTx(context.Background(), sg, ui)
			switch {
			case err == nil:
				ok.Add(1)
			case errs.Is(err, errs.PermissionDenied) && strings.Contains(err.Error(), "daily limit"):
				denied.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 || denied.Load() != 40 {
		t.Errorf("%d signed, %d denied; want 10 and 40", ok.Load(), denied.Load())
	}
	sg2 := e.key(t, "nonce-etcd", &eth.Policy{ChainIDs: []uint64{1}})
	var one atomic.Int32
	for i := range 40 {
		wg.Go(func() {
			ui, _ := eth.ParseJSON([]byte(strings.Replace(strings.Replace(pay, `"nonce":"0x0"`, `"nonce":"0x5"`, 1), `"value":"0x3e8"`, fmt.Sprintf(`"value":"0x%x"`, 1000+i), 1)))
			if _, err := signers[i%2].SignTx(context.Background(), sg2, ui); err == nil {
				one.Add(1)
			}
		})
	}
	wg.Wait()
	if one.Load() != 1 {
		t.Errorf("%d different transactions signed for one nonce", one.Load())
	}
}
