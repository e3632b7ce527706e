package namespace_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
)

func openStore(t *testing.T) *boltstore.Store {
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "keyring.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func freeze(t *testing.T, r *namespace.Registry, ns string, on bool) {
	t.Helper()
	if _, err := r.Update(context.Background(), ns, func(rec *namespace.Record) error { rec.Frozen = on; return nil }); err != nil {
		t.Fatal(err)
	}
}

// Two registries over one store are two replicas: a freeze pulled on one
// reaches the other at its next refresh, also for a namespace deleted and
// made again under the same name (whose count of changes starts over).
func TestFreezeReachesAnotherReplica(t *testing.T) {
	ctx, store := context.Background(), openStore(t)
	a, b := namespace.NewRegistry(store), namespace.NewRegistry(store)
	if _, err := a.Create(ctx, namespace.Record{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	freeze(t, a, "t", true)
	freeze(t, a, "t", false)
	b.Refresh(ctx)
	if err := b.Frozen(ctx, "t/k"); err != nil {
		t.Fatalf("unfrozen t on b: %v", err)
	}
	if err := a.Delete(ctx, "t", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Create(ctx, namespace.Record{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	freeze(t, a, "t", true)
	b.Refresh(ctx)
	if err := b.Frozen(ctx, "t/k"); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("a freeze of the namespace made again, on the other replica: %v", err)
	}
	// A refresh that read the store before this replica's own freeze
	// landed does not undo it in memory.
	freeze(t, b, "t", false)
	stale := namespace.NewRegistry(store)
	stale.Refresh(ctx)
	freeze(t, stale, "t", true)
	if err := stale.Frozen(ctx, "t/k"); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("own freeze: %v", err)
	}
}

// flaky is a store that can be cut off.
type flaky struct {
	*boltstore.Store
	down atomic.Bool
}

func (f *flaky) ListAnchors(ctx context.Context, p string) (map[string][]byte, error) {
	if f.down.Load() {
		return nil, errs.New(errs.Unavailable, "down")
	}
	return f.Store.ListAnchors(ctx, p)
}

// A replica cut off from the store does not sign on in a namespace for
// longer than StaleAfter: it could not see a freeze. Root, never frozen,
// signs on from memory, as in any store outage.
func TestCutOffReplicaFailsClosedAfterStaleAfter(t *testing.T) {
	ctx, store := context.Background(), openStore(t)
	a := namespace.NewRegistry(store)
	cut := &flaky{Store: store}
	b := namespace.NewRegistry(cut)
	if _, err := a.Create(ctx, namespace.Record{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Frozen(ctx, "t/k"); err != nil {
		t.Fatalf("fresh: %v", err)
	}
	cut.down.Store(true)
	if err := b.Refresh(ctx); err == nil {
		t.Fatal("refresh of a store that is down")
	}
	namespace.AgeReadForTest(b, namespace.StaleAfter+1)
	if err := b.Frozen(ctx, "t/k"); !errs.Is(err, errs.Unavailable) {
		t.Errorf("signing in t with a stale copy: %v", err)
	}
	if err := b.Frozen(ctx, "k"); err != nil {
		t.Errorf("signing in root with a stale copy: %v", err)
	}
	cut.down.Store(false)
	b.Refresh(ctx)
	if err := b.Frozen(ctx, "t/k"); err != nil {
		t.Errorf("after the store came back: %v", err)
	}
}
