package storehealth_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	"github.com/sigil-hsm/sigil/keyring/etcdstore"
	"github.com/sigil-hsm/sigil/keyring/storehealth"
)

// etcd stopped: every call needing the store ends Unavailable within 2 s
// (the store's own deadline, not the caller's 30 s), the probe reports it
// down and calls then fail at once; etcd back: healthy again within 5 s,
// and the calls work, all by themselves.
func TestEtcdGoneAndBack(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	inner, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: c.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	g := storehealth.Guard(inner, storehealth.Options{HealthInterval: 200 * time.Millisecond})
	g.Start()
	defer g.Close()
	if err := g.PutAnchor(ctx, "x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)
	// Concurrent callers with long deadlines, as treasury clients are.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			start := time.Now()
			err := g.UpdateLedger(cctx, "k", func(r *keyring.LedgerRecord) error { return nil })
			took := time.Since(start)
			if !errs.Is(err, errs.Unavailable) || !errors.Is(err, storehealth.ErrDown) {
				t.Errorf("caller %d: %v (kind %v), want Unavailable naming the store", i, err, errs.KindOf(err))
			}
			if took > 2*time.Second {
				t.Errorf("caller %d waited %v for a store that is gone", i, took)
			}
		}()
	}
	wg.Wait()
	for deadline := time.Now().Add(5 * time.Second); g.Health().Up; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the probe did not notice the store is gone")
		}
	}
	start := time.Now()
	_, err = g.GetAnchor(ctx, "x")
	if !errs.Is(err, errs.Unavailable) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("with the store known down: %v after %v, want Unavailable at once", err, time.Since(start))
	}
	if d := g.Health().Detail; d == "" {
		t.Fatal("down without a reason")
	}
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for !g.Health().Up {
		if time.Since(back) > 5*time.Second {
			t.Fatalf("not healthy 5 s after etcd returned: %+v", g.Health())
		}
		time.Sleep(20 * time.Millisecond)
	}
	v, err := g.GetAnchor(ctx, "x")
	if err != nil || string(v) != "1" {
		t.Fatalf("after etcd returned: %q, %v", v, err)
	}
	t.Logf("healthy %v after etcd returned", time.Since(back).Round(time.Millisecond))
}

// A caller's own deadline stays its own: an expired caller context is
// not the store's fault and does not mark it down.
func TestCallerDeadlineIsNotAnOutage(t *testing.T) {
	inner, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	g := storehealth.Guard(inner, storehealth.Options{})
	defer g.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = g.GetAnchor(ctx, "x")
	if errors.Is(err, storehealth.ErrDown) {
		t.Fatalf("a cancelled caller blamed the store: %v", err)
	}
	if h := g.Check(context.Background()); !h.Up {
		t.Fatalf("bbolt store down: %+v", h)
	}
	if _, err := g.GetAnchor(context.Background(), "x"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("absent anchor: %v", err)
	}
}
