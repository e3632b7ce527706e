package approval

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/keyring/etcdstore"
)

// holdAll holds each of rs at once through the stores given in turn,
// and returns the requests held and the errors.
func holdAll(t *testing.T, stores []*Store, rs []*Request) (map[string]int, []error) {
	t.Helper()
	var mu sync.Mutex
	ids := map[string]int{}
	var failed []error
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() {
			got, err := stores[i%len(stores)].Hold(context.Background(), r, t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err)
				return
			}
			ids[got.ID]++
		})
	}
	wg.Wait()
	return ids, failed
}

// Identical requests held at the same moment make one request, and a
// requester's concurrent requests never pass its bound: both are decided
// inside the index's atomic update.
func TestConcurrentHoldsAreExact(t *testing.T) {
	s := openStore(t)
	same := make([]*Request, 12)
	for i := range same {
		same[i] = held()
	}
	ids, failed := holdAll(t, []*Store{s}, same)
	if len(failed) != 0 || len(ids) != 1 {
		t.Fatalf("12 identical requests at once: held as %d requests, errors %v", len(ids), failed)
	}
	all, err := s.List(context.Background())
	if err != nil || len(all) != 1 {
		t.Fatalf("records kept: %d, %v", len(all), err)
	}

	many := make([]*Request, 3*PerRequester)
	for i := range many {
		many[i] = held()
		many[i].PayloadSHA256 = fmt.Sprint("distinct-", i)
	}
	ids, failed = holdAll(t, []*Store{s}, many)
	if len(ids) != PerRequester-1 || len(failed) != len(many)-(PerRequester-1) {
		t.Fatalf("%d distinct requests at once from a requester holding one: %d held, %d refused", len(many), len(ids), len(failed))
	}
	for _, err := range failed {
		kind(t, "a request past the bound", err, errs.ResourceExhausted)
	}
}

// Over two replicas sharing an etcd cluster, identical requests make
// one request and a namespace's bound holds exactly.
func TestConcurrentHoldsAcrossReplicas(t *testing.T) {
	c := etcdtest.Start(t, 1)
	var stores []*Store
	for range 2 {
		e, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints, Prefix: "/holds/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		stores = append(stores, NewStore(e))
	}
	same := make([]*Request, 8)
	for i := range same {
		same[i] = held()
	}
	if ids, failed := holdAll(t, stores, same); len(failed) != 0 || len(ids) != 1 {
		t.Fatalf("8 identical requests over two replicas: held as %d requests, errors %v", len(ids), failed)
	}

	// The namespace full but for 3 (entries of requests being held,
	// their records not written yet): 12 requesters race for them.
	var fill []entry
	for i := range PerNamespace - 3 {
		e := entryOf(held())
		e.Requester, e.PayloadSHA256 = fmt.Sprint("spiffe://example.org/tenant-a/old-", i), fmt.Sprint(i)
		fill = append(fill, e)
	}
	if err := stores[0].a.CreateAnchor(context.Background(), indexPrefix+"tenant-a", mustJSON(t, fill)); err != nil {
		t.Fatal(err)
	}
	race := make([]*Request, 12)
	for i := range race {
		race[i] = held()
		race[i].Namespace, race[i].Requester = "tenant-a", fmt.Sprint("spiffe://example.org/tenant-a/new-", i)
	}
	ids, failed := holdAll(t, stores, race)
	if len(ids) != 3 || len(failed) != 9 {
		t.Fatalf("12 requesters racing for a namespace's last 3: %d held, %d refused (%v)", len(ids), len(failed), failed)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An entry whose record was never written (its Hold crashed between
// the two) stops counting after grace; one for a request held by an
// earlier release, which kept no index, is found from the records.
func TestIndexHealsAndStartsFromRecords(t *testing.T) {
	s, ctx := openStore(t), context.Background()
	orphan := held()
	if err := s.a.CreateAnchor(ctx, indexPrefix+"root", mustJSON(t, []entry{entryOf(orphan)})); err != nil {
		t.Fatal(err)
	}
	_, err := s.Hold(ctx, held(), t0)
	kind(t, "a retry of a request whose record is not written yet", err, errs.Unavailable)
	got, err := s.Hold(ctx, held(), t0.Add(grace+time.Second))
	if err != nil || got.ID == orphan.ID {
		t.Fatalf("past grace, the orphan still answers: %v %v", got, err)
	}

	s = openStore(t)
	old := held()
	if _, err := s.Hold(ctx, old, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.a.UpdateAnchor(ctx, indexPrefix+"root", func([]byte) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Hold(ctx, held(), t0); err != nil || got.ID != old.ID {
		t.Fatalf("a retry of a request held before the index: %v %v", got, err)
	}
}

// A burst of requests in one namespace, each of its own requester, is
// held whole: the replica takes them one at a time, so none loses the
// index's compare-and-swap until it gives up.
func TestBurstOfHoldsInOneNamespace(t *testing.T) {
	s := openStore(t)
	burst := make([]*Request, 100)
	for i := range burst {
		burst[i] = held()
		burst[i].Namespace, burst[i].Requester = "tenant-a", fmt.Sprint("spiffe://example.org/tenant-a/", i)
	}
	if ids, failed := holdAll(t, []*Store{s}, burst); len(ids) != len(burst) || len(failed) != 0 {
		t.Fatalf("100 requests at once in one namespace: %d held, refused %v", len(ids), failed)
	}
}
