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

// hangingStore holds its writes until released, as bbolt does inside a
// write whose fsync hangs (it ignores the context there); reads answer.
type hangingStore struct {
	storehealth.Store
	release chan struct{}
}

func (h *hangingStore) PutAnchor(ctx context.Context, name string, value []byte) error {
	<-h.release
	return h.Store.PutAnchor(ctx, name, value)
}

// A write that hangs well past its deadline (5 s), in a store that ignores
// contexts and still answers reads, is found by the probe: the store is
// down (readiness red, other calls fail fast) until the write returns.
func TestHungWriteIsAnOutage(t *testing.T) {
	inner, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	h := &hangingStore{Store: inner, release: make(chan struct{})}
	g := storehealth.Guard(h, storehealth.Options{Timeout: 200 * time.Millisecond})
	defer g.Close()
	done := make(chan error, 1)
	go func() { done <- g.PutAnchor(context.Background(), "x", []byte("1")) }()
	time.Sleep(time.Second)
	ctx := context.Background()
	if h := g.Check(ctx); !h.Up {
		t.Fatalf("a write late by less than 5 s marked the store down: %+v", h)
	}
	time.Sleep(5 * time.Second)
	g.Check(ctx)
	if h := g.Check(ctx); h.Up {
		t.Fatal("a write hung past its deadline, and the store is up")
	}
	if _, err := g.GetAnchor(ctx, "x"); !errors.Is(err, storehealth.ErrDown) {
		t.Fatalf("a read while a write hangs: %v, want to fail fast", err)
	}
	close(h.release)
	if err := <-done; err != nil && !errors.Is(err, storehealth.ErrDown) {
		t.Fatalf("the hung write: %v, want done or Unavailable", err)
	}
	if h := g.Check(ctx); !h.Up {
		t.Fatalf("after the write returned: %+v", h)
	}
}
