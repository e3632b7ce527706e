package notify

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
)

// receiver is a webhook endpoint: down (503) until told otherwise; it
// checks each delivery's signature and counts deliveries by idempotency
// key.
type receiver struct {
	t      *testing.T
	secret []byte
	down   atomic.Bool
	mu     sync.Mutex
	got    map[string]int // idempotency key → deliveries
	bodies map[string]Body
	calls  atomic.Int64
}

func newReceiver(t *testing.T, secret string) (*receiver, string) {
	r := &receiver{t: t, secret: []byte(secret), got: map[string]int{}, bodies: map[string]Body{}}
	r.down.Store(true)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv.URL
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.calls.Add(1)
	if r.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(req.Body)
	ts, sig, _ := strings.Cut(strings.TrimPrefix(req.Header.Get(HeaderSignature), "t="), ",v1=")
	if !hmac.Equal([]byte(sig), []byte(Sign(r.secret, ts, body))) {
		r.t.Errorf("a delivery whose signature does not verify: %s", req.Header.Get(HeaderSignature))
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var b Body
	if err := json.Unmarshal(body, &b); err != nil || b.ID != req.Header.Get(HeaderIdempotency) || b.Type != req.Header.Get(HeaderEvent) || b.Text == "" {
		r.t.Errorf("a delivery's body %s (headers %v)", body, req.Header)
	}
	r.mu.Lock()
	r.got[b.ID]++
	r.bodies[b.ID] = b
	r.mu.Unlock()
}

func (r *receiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[id]
}

// world is a store, two replicas' notifiers over it and a shared clock.
type world struct {
	now       time.Time
	approvals *approval.Store
	replicas  []*Notifier
}

func newWorld(t *testing.T, hooks []Hook) *world {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w := &world{now: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC), approvals: approval.NewStore(st)}
	for _, name := range []string{"r1", "r2"} {
		w.replicas = append(w.replicas, New(Options{Hooks: hooks, Approvals: w.approvals, Outbox: st, Replica: name,
			Console: "https://sigil.example.org:7444", Now: func() time.Time { return w.now }, Log: slog.New(slog.DiscardHandler)}))
	}
	return w
}

func (w *world) passes(ctx context.Context) {
	for _, n := range w.replicas {
		n.pass(ctx)
	}
}

var (
	officer = identity.ID{Kind: identity.URI, Name: "spiffe://example.org/officer/alice"}
	events  = []string{approval.EventHeld, approval.EventApproved, approval.EventDenied, approval.EventExpired, approval.EventRan, "backend.down"}
)

func (w *world) hold(t *testing.T, expires time.Duration) *approval.Request {
	r, err := w.approvals.Hold(context.Background(), &approval.Request{ID: approval.NewID(), Method: "/m", Operation: "eth.sign_tx", KeyID: "treasury",
		Requester: "dns:treasury.internal", Payload: []byte("p"), PayloadSHA256: approval.NewID(), Approvers: []string{"spiffe://example.org/officer/*"}, Quorum: 1,
		Created: w.now, Expires: w.now.Add(expires), State: approval.Pending, Summary: []approval.Field{{Name: "value", Value: "12 ETH"}}}, w.now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Every event reaches the hook once by its idempotency key, though the
// hook is down for a while, two replicas deliver, and one of them dies
// holding a delivery: a request held then denied, one that expires, and
// a backend going down. Each delivery is signed; retries back off.
func TestEveryEventOnceAcrossOutagesAndReplicas(t *testing.T) {
	ctx := context.Background()
	rcv, url := newReceiver(t, "throwaway-test-secret")
	w := newWorld(t, []Hook{{URL: url, Secret: []byte("throwaway-test-secret"), Events: events}})
	denied := w.hold(t, time.Hour)
	expiring := w.hold(t, time.Minute)
	w.replicas[0].Raise("backend.down", "hsm", "the module does not answer")
	if _, err := w.approvals.Update(ctx, denied.ID, func(r *approval.Request) error {
		return r.Deny([]identity.ID{officer}, "not today", w.now)
	}); err != nil {
		t.Fatal(err)
	}

	// The hook is down: a round tries each delivery once (two replicas
	// or not), fails and backs off: passes before the backoff ends call
	// nobody.
	for range 6 {
		w.passes(ctx)
		tried := rcv.calls.Load()
		w.passes(ctx)
		if again := rcv.calls.Load(); again != tried {
			t.Fatalf("%d calls within the backoff", again-tried)
		}
		w.now = w.now.Add(20 * time.Second)
	}
	// A round to a failing hook stops at its first failure: one call a
	// round for each of the three outboxes (two requests, backend.down).
	if tries := rcv.calls.Load(); tries != 6*3 {
		t.Fatalf("%d calls to a hook that is down over 6 rounds, want 18", tries)
	}
	// r1 dies in the middle of a round: its claim on the denied request's
	// outbox holds r2 off until it lapses.
	hook := w.replicas[0].o.Hooks[0]
	if _, err := w.approvals.Update(ctx, denied.ID, func(r *approval.Request) error {
		r.Outbox.Hooks[hook.id()] = &approval.HookState{Holder: "r1", Until: w.now.Add(holdFor)}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rcv.down.Store(false)
	w.replicas[1].pass(ctx)
	if n := rcv.count(denied.ID + "." + approval.EventDenied); n != 0 {
		t.Fatalf("r2 delivered past r1's claim (%d)", n)
	}
	w.now = w.now.Add(holdFor + 31*time.Second)
	w.passes(ctx)
	w.passes(ctx)
	for _, id := range []string{denied.ID + "." + approval.EventHeld, denied.ID + "." + approval.EventDenied,
		expiring.ID + "." + approval.EventHeld, expiring.ID + "." + approval.EventExpired} {
		if n := rcv.count(id); n != 1 {
			t.Errorf("%s delivered %d times (got %v)", id, n, rcv.got)
		}
	}
	rcv.mu.Lock()
	var infra []Body
	for _, b := range rcv.bodies {
		if b.Type == "backend.down" {
			infra = append(infra, b)
		}
		if b.Approval != nil && !strings.Contains(b.Link, "/approvals/"+b.Approval.ID) {
			t.Errorf("%s: no link to the console's approval page: %q", b.ID, b.Link)
		}
	}
	rcv.mu.Unlock()
	if len(infra) != 1 || infra[0].Subject != "hsm" || rcv.count(infra[0].ID) != 1 {
		t.Errorf("backend.down deliveries: %+v", infra)
	}
	// Nothing is owed any more: further passes call nobody.
	before := rcv.calls.Load()
	w.now = w.now.Add(time.Hour)
	w.passes(ctx)
	if after := rcv.calls.Load(); after != before {
		t.Errorf("%d calls once everything was delivered", after-before)
	}
}

// A hook gets only the events it asks for, and a hook that never
// answers does not hold back another.
func TestHooksAreApart(t *testing.T) {
	ctx := context.Background()
	rcv, url := newReceiver(t, "throwaway-a")
	rcv.down.Store(false)
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusBadGateway) }))
	t.Cleanup(dead.Close)
	w := newWorld(t, []Hook{
		{URL: url, Secret: []byte("throwaway-a"), Events: []string{approval.EventHeld}},
		{URL: dead.URL, Secret: []byte("throwaway-b"), Events: events},
	})
	r := w.hold(t, time.Hour)
	w.replicas[0].Raise("backend.down", "hsm", "")
	w.passes(ctx)
	if n := rcv.count(r.ID + "." + approval.EventHeld); n != 1 {
		t.Fatalf("the live hook got the held event %d times", n)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.got) != 1 {
		t.Errorf("the live hook got events it did not ask for: %v", rcv.got)
	}
}
