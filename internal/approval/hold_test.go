package approval

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
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
// requester's concurrent requests never pass its bound: a replica's
// holds decide and write one at a time.
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

// A burst of requests in one namespace, each of its own requester, is
// held whole.
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

// A requester's bound counts its live requests in every namespace.
func TestRequesterBoundSpansNamespaces(t *testing.T) {
	s, ctx := openStore(t), context.Background()
	ok := 0
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		for i := range PerRequester {
			r := held()
			r.Namespace, r.KeyID, r.PayloadSHA256 = ns, ns+"/k", fmt.Sprint(ns, i)
			if _, err := s.Hold(ctx, r, t0); err == nil {
				ok++
			}
		}
	}
	if ok != PerRequester {
		t.Fatalf("one requester holds %d live requests at once (bound %d)", ok, PerRequester)
	}
}

// An approved request nobody ran yet is live however late: a retry of
// it is that request, not a second one.
func TestRetryOfALateApprovedRequestIsThatRequest(t *testing.T) {
	s, ctx := openStore(t), context.Background()
	first := held()
	if _, err := s.Hold(ctx, first, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, first.ID, func(r *Request) error {
		r.State, r.DecidedAt = Approved, t0.Add(time.Minute)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	late := first.Expires.Add(2*Retention + time.Hour)
	retry := held()
	retry.Created, retry.Expires = late, late.Add(time.Hour)
	if got, err := s.Hold(ctx, retry, late); err != nil || got.ID != first.ID {
		t.Fatalf("a retry of a live (approved) request: %v %v, want %s", got, err, first.ID)
	}
}

// A record the store cannot decode blocks nobody: its requester holds
// other requests, then and a year later.
func TestCorruptRecordBlocksNobody(t *testing.T) {
	s, ctx := openStore(t), context.Background()
	bad := held()
	if _, err := s.Hold(ctx, bad, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.a.UpdateAnchor(ctx, prefix+bad.ID, func([]byte) ([]byte, error) { return []byte(`{"id":`), nil }); err != nil {
		t.Fatal(err)
	}
	for i, at := range []time.Time{t0, t0.Add(365 * 24 * time.Hour)} {
		r := held()
		r.PayloadSHA256 = fmt.Sprint("another payload ", i)
		if _, err := s.Hold(ctx, r, at); err != nil {
			t.Fatalf("at %v: the requester cannot hold anything: %v", at.Sub(t0), err)
		}
	}
}

// hookedAnchors is a store's anchors with a hook before each call.
type hookedAnchors struct {
	Anchors
	before func(ctx context.Context, call, name string) error
}

func (a *hookedAnchors) ListAnchors(ctx context.Context, p string) (map[string][]byte, error) {
	if err := a.before(ctx, "list", p); err != nil {
		return nil, err
	}
	return a.Anchors.ListAnchors(ctx, p)
}

func (a *hookedAnchors) GetAnchor(ctx context.Context, name string) ([]byte, error) {
	if err := a.before(ctx, "get", name); err != nil {
		return nil, err
	}
	return a.Anchors.GetAnchor(ctx, name)
}

func (a *hookedAnchors) CreateAnchor(ctx context.Context, name string, v []byte) error {
	if err := a.before(ctx, "create", name); err != nil {
		return err
	}
	return a.Anchors.CreateAnchor(ctx, name, v)
}

func (a *hookedAnchors) UpdateAnchor(ctx context.Context, name string, fn func([]byte) ([]byte, error)) error {
	if err := a.before(ctx, "update", name); err != nil {
		return err
	}
	return a.Anchors.UpdateAnchor(ctx, name, fn)
}

// A hold whose store call hangs keeps no other hold waiting past that
// one's own deadline.
func TestHungHoldKeepsNoOtherPastItsDeadline(t *testing.T) {
	base := openStore(t)
	var hung atomic.Bool
	s := NewStore(&hookedAnchors{Anchors: base.a, before: func(ctx context.Context, call, name string) error {
		if call == "create" && hung.CompareAndSwap(false, true) {
			<-ctx.Done() // a store that answers only when its caller gives up
			return ctx.Err()
		}
		return nil
	}})
	long, cancelLong := context.WithCancel(context.Background())
	defer cancelLong()
	go s.Hold(long, held(), t0)
	for !hung.Load() {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := held()
	r.Requester, r.PayloadSHA256 = "spiffe://example.org/someone-else", "other"
	done := make(chan error, 1)
	go func() { _, err := s.Hold(ctx, r, t0); done <- err }()
	select {
	case err := <-done:
		kind(t, "a hold waiting behind a hung one", err, errs.DeadlineExceeded)
	case <-time.After(5 * time.Second):
		t.Fatal("a hold with a 200 ms deadline still waits after 5 s behind another hold's store call")
	}
}

// A hold whose context ends between the payload and the record leaves
// neither: the retry is a request that runs, with its bytes.
func TestHoldCutShortLeavesNothing(t *testing.T) {
	base := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	s := NewStore(&hookedAnchors{Anchors: base.a, before: func(c context.Context, call, name string) error {
		if call == "create" && strings.HasPrefix(name, prefix) && c.Value(cutKey{}) != nil {
			cancel() // the deadline passes here
			return c.Err()
		}
		return nil
	}})
	if _, err := s.Hold(context.WithValue(ctx, cutKey{}, true), held(), t0); err == nil {
		t.Fatal("a hold cut short succeeded")
	}
	if payloads, err := base.a.ListAnchors(context.Background(), payloadPrefix); err != nil || len(payloads) != 0 {
		t.Fatalf("a hold cut short left %d payloads (%v)", len(payloads), err)
	}
	got, err := s.Hold(context.Background(), held(), t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Payload(context.Background(), got.ID); err != nil {
		t.Fatalf("the retry is request %s, whose payload is missing: %v", got.ID, err)
	}
}

type cutKey struct{}

// A retry whose first request's payload cannot be read (the store fails)
// is answered with the failure, not held as a second request.
func TestRetryWhileTheStoreFailsMakesNoSecondRequest(t *testing.T) {
	base := openStore(t)
	var failing atomic.Bool
	s := NewStore(&hookedAnchors{Anchors: base.a, before: func(_ context.Context, call, name string) error {
		if failing.Load() && call == "get" && strings.HasPrefix(name, payloadPrefix) {
			return errs.New(errs.Unavailable, "injected: store went away")
		}
		return nil
	}})
	ctx := context.Background()
	if _, err := s.Hold(ctx, held(), t0); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	_, err := s.Hold(ctx, held(), t0)
	kind(t, "a retry while the payload cannot be read", err, errs.Unavailable)
	if all, err := s.List(ctx); err != nil || len(all) != 1 {
		t.Fatalf("%d requests kept (%v), want the first alone", len(all), err)
	}
}
