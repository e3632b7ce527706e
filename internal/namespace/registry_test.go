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

// failDelete is a store whose next deletion of a record fails, as a
// store going away between ns delete's two steps would.
type failDelete struct {
	*boltstore.Store
	armed atomic.Bool
}

func (f *failDelete) UpdateAnchor(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) error {
	return f.Store.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) {
		out, err := fn(old)
		if err == nil && out == nil && f.armed.CompareAndSwap(true, false) {
			return nil, errs.New(errs.Unavailable, "store gone")
		}
		return out, err
	})
}

// Deleting a namespace marks it, checks it is empty, then deletes it. A
// check that fails lifts the mark; a deletion that fails leaves the mark,
// so nothing is made in the namespace, and deleting again completes.
func TestNamespaceDeleteSurvivesAFailureBetweenItsSteps(t *testing.T) {
	ctx := context.Background()
	store := &failDelete{Store: openStore(t)}
	r := namespace.NewRegistry(store)
	if _, err := r.Create(ctx, namespace.Record{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	notEmpty := errs.New(errs.FailedPrecondition, "holds keys")
	if err := r.Delete(ctx, "t", func(context.Context) error { return notEmpty }); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("deleting a namespace that is not empty: %v", err)
	}
	if err := r.Usable(ctx, "t"); err != nil {
		t.Fatalf("the mark stayed after a refused deletion: %v", err)
	}
	store.armed.Store(true)
	if err := r.Delete(ctx, "t", func(context.Context) error { return nil }); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("a deletion the store failed: %v", err)
	}
	fresh := namespace.NewRegistry(store) // as another replica, or this one restarted
	if err := fresh.Usable(ctx, "t"); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("a namespace half-deleted takes creations: %v", err)
	}
	if err := fresh.Delete(ctx, "t", func(context.Context) error { return nil }); err != nil {
		t.Fatalf("deleting it again: %v", err)
	}
	if _, err := fresh.Get(ctx, "t"); !errs.Is(err, errs.NotFound) {
		t.Errorf("after the second deletion: %v", err)
	}
}
