// Package storetest is the contract every keyring.Store must keep,
// written once and run against each store (bbolt, etcd).
package storetest

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

// CompareAndSwap checks the revision contract of Put, Get and Delete.
func CompareAndSwap(t *testing.T, s keyring.Store) {
	t.Helper()
	ctx := context.Background()
	k := &keyring.Key{ID: "cas-a", Purpose: "raw"}
	rev1, err := s.Put(ctx, k)
	if err != nil || rev1 == 0 {
		t.Fatal(rev1, err)
	}
	if _, err := s.Put(ctx, k); !errs.Is(err, errs.AlreadyExists) {
		t.Fatalf("create over an existing key: %v", err)
	}
	k.Revision = rev1
	rev2, err := s.Put(ctx, k)
	if err != nil || rev2 <= rev1 {
		t.Fatal(rev2, err)
	}
	if _, err := s.Put(ctx, k); !errs.Is(err, errs.Aborted) { // k.Revision is stale now
		t.Fatalf("stale write: %v", err)
	}
	got, err := s.Get(ctx, "cas-a")
	if err != nil || got.Revision != rev2 {
		t.Fatal(got, err)
	}
	if list, err := s.List(ctx); err != nil || len(list) != 1 || list[0].Revision != rev2 {
		t.Fatalf("List: %v %v", list, err)
	}
	if err := s.Delete(ctx, "cas-a", rev1); !errs.Is(err, errs.Aborted) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := s.Delete(ctx, "cas-a", rev2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "cas-a"); !errs.Is(err, errs.NotFound) {
		t.Fatal(err)
	}
	k.Revision = rev2
	if _, err := s.Put(ctx, k); !errs.Is(err, errs.NotFound) {
		t.Fatalf("update of a deleted key: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(cctx, &keyring.Key{ID: "cas-b"}); !errs.Is(err, errs.Canceled) {
		t.Fatalf("write with a canceled context: %v", err)
	}
}

// Anchors checks that anchors are stored, replaced and reported missing.
func Anchors(t *testing.T, s keyring.Anchors) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.GetAnchor(ctx, "audit/r1"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("missing anchor: %v", err)
	}
	for _, v := range []string{"first", "second"} {
		if err := s.PutAnchor(ctx, "audit/r1", []byte(v)); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetAnchor(ctx, "audit/r1"); err != nil || string(got) != v {
			t.Fatalf("anchor: %q %v, want %q", got, err, v)
		}
	}
	if _, err := s.GetAnchor(ctx, "audit/r2"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("another replica's anchor: %v", err)
	}
	if err := s.PutAnchor(ctx, "other/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if all, err := s.ListAnchors(ctx, "audit/"); err != nil || len(all) != 1 || string(all["audit/r1"]) != "second" {
		t.Fatalf("ListAnchors: %q %v", all, err)
	}
}

// UpdateAnchor checks that rewrites of one anchor are atomic: writers
// racing on a counter lose no increment; an error changes nothing; nil
// deletes.
func UpdateAnchor(t *testing.T, s keyring.Anchors) {
	t.Helper()
	ctx := context.Background()
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := s.UpdateAnchor(ctx, "count", func(old []byte) ([]byte, error) {
					n, _ := strconv.Atoi(string(old))
					return []byte(strconv.Itoa(n + 1)), nil
				}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if got, err := s.GetAnchor(ctx, "count"); err != nil || string(got) != strconv.Itoa(writers*each) {
		t.Fatalf("after %d racing increments: %q %v", writers*each, got, err)
	}
	refused := errs.New(errs.FailedPrecondition, "no")
	if err := s.UpdateAnchor(ctx, "count", func([]byte) ([]byte, error) { return nil, refused }); err != refused {
		t.Fatalf("fn's error: %v", err)
	}
	if err := s.UpdateAnchor(ctx, "count", func([]byte) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAnchor(ctx, "count"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("a nil result leaves %v", err)
	}
}

// GroupCommit checks rewrites that share transactions (a group commit):
// 96 concurrent rewrites of one value each see the one before, so its 32
// increments make 32; a rewrite whose fn fails or panics fails alone, with
// its own error or Internal, and the others in its batch are written.
func GroupCommit(t *testing.T, s keyring.Anchors) {
	t.Helper()
	ctx := context.Background()
	refused := errors.New("refused")
	var wg sync.WaitGroup
	errsOf := make([]error, 96)
	for i := range errsOf {
		wg.Go(func() {
			errsOf[i] = s.UpdateAnchor(ctx, "counter", func(old []byte) ([]byte, error) {
				switch i % 3 {
				case 1:
					return nil, refused
				case 2:
					panic("a broken rewrite")
				}
				n, _ := strconv.Atoi(string(old))
				return []byte(strconv.Itoa(n + 1)), nil
			})
		})
	}
	wg.Wait()
	for i, err := range errsOf {
		switch i % 3 {
		case 0:
			if err != nil {
				t.Errorf("rewrite %d: %v", i, err)
			}
		case 1:
			if !errors.Is(err, refused) {
				t.Errorf("rewrite %d: %v, want its own error", i, err)
			}
		case 2:
			if !errs.Is(err, errs.Internal) {
				t.Errorf("rewrite %d panicked: %v", i, err)
			}
		}
	}
	if v, err := s.GetAnchor(ctx, "counter"); err != nil || string(v) != "32" {
		t.Fatalf("counter %q, %v: want 32", v, err)
	}
}

// SnapshotStore is a store that keeps keys, ledgers and anchors and can
// be snapshotted.
type SnapshotStore interface {
	keyring.Store
	keyring.Ledger
	keyring.Anchors
	keyring.Snapshotter
}

// Snapshots checks that what a snapshot of from holds restores into
// into (empty) whole: the keys (readable, and writable at their
// revision), ledgers and anchors; that a second restore into the
// non-empty store is refused unless replacing, and that replacing drops
// what the snapshot does not hold.
func Snapshots(t *testing.T, from, into SnapshotStore) {
	t.Helper()
	ctx := context.Background()
	if _, err := from.Put(ctx, &keyring.Key{ID: "snap-k", Purpose: "raw", Labels: map[string]string{"team": "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := from.UpdateLedger(ctx, "snap-k", func(r *keyring.LedgerRecord) error { r.Extra = []byte(`{"n":1}`); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := from.PutAnchor(ctx, "snap/a", []byte("anchored")); err != nil {
		t.Fatal(err)
	}
	snap, err := from.Snapshot(ctx)
	if err != nil || len(snap.Keys) != 1 || len(snap.Ledgers) != 1 || len(snap.Anchors) != 1 || snap.Revision == 0 {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
	if err := into.Restore(ctx, snap, false); err != nil {
		t.Fatal(err)
	}
	k, err := into.Get(ctx, "snap-k")
	if err != nil || k.Labels["team"] != "a" {
		t.Fatalf("the restored key: %+v %v", k, err)
	}
	if _, err := into.Put(ctx, k); err != nil { // writable at the revision it was read at
		t.Fatalf("writing the restored key: %v", err)
	}
	if rec, err := into.ReadLedger(ctx, "snap-k"); err != nil || string(rec.Extra) != `{"n":1}` {
		t.Fatalf("the restored ledger: %+v %v", rec, err)
	}
	if v, err := into.GetAnchor(ctx, "snap/a"); err != nil || string(v) != "anchored" {
		t.Fatalf("the restored anchor: %q %v", v, err)
	}
	if err := into.Restore(ctx, snap, false); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("a restore into a store that is not empty: %v", err)
	}
	into.PutAnchor(ctx, "snap/extra", []byte("x"))
	if err := into.Restore(ctx, snap, true); err != nil {
		t.Fatal(err)
	}
	if _, err := into.GetAnchor(ctx, "snap/extra"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("replacing kept what the snapshot does not hold: %v", err)
	}
}
