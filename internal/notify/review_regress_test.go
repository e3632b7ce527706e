package notify

import (
	"context"
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
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	jwtpurpose "github.com/sigil-hsm/sigil/purpose/jwt"
)

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func reviewWorld(t *testing.T, c *clock, hooks []Hook, client *http.Client) (*approval.Store, *boltstore.Store, []*Notifier) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ap := approval.NewStore(st)
	var ns []*Notifier
	for _, name := range []string{"r1", "r2"} {
		ns = append(ns, New(Options{Hooks: hooks, Approvals: ap, Outbox: st, Replica: name, Now: c.now, Client: client, Log: slog.New(slog.DiscardHandler), Interval: 50 * time.Millisecond}))
	}
	return ap, st, ns
}

func holdAt(t *testing.T, ap *approval.Store, now time.Time, requester string) *approval.Request {
	r, err := ap.Hold(context.Background(), &approval.Request{ID: approval.NewID(), Method: "/m", Operation: "eth.sign_tx", KeyID: "treasury",
		Requester: requester, Payload: []byte("p"), PayloadSHA256: approval.NewID(), Approvers: []string{"spiffe://example.org/officer/*"}, Quorum: 1,
		Created: now, Expires: now.Add(time.Hour), State: approval.Pending}, now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Regressions a hostile review found in delivery, each failing before
// its fix.

// A round slower than the 30 s claim (three events to a hook that takes
// 11 s a call) stops before the claim lapses and records each delivery
// as made: the second replica never calls the hook at the same time, and
// no event goes out twice.
func TestRegressionClaimLapsesMidRound(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	var mu sync.Mutex
	got := map[string]int{}
	inflight, maxInflight := 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inflight++
		maxInflight = max(maxInflight, inflight)
		got[r.Header.Get(HeaderIdempotency)]++
		mu.Unlock()
		c.add(11 * time.Second) // the call takes 11 s of the clock
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		inflight--
		mu.Unlock()
	}))
	defer srv.Close()
	ap, _, rs := reviewWorld(t, c, []Hook{{URL: srv.URL, Secret: []byte("s"), Events: Events}}, nil)
	r := holdAt(t, ap, c.now(), "dns:a")
	officer := identity.ID{Kind: identity.URI, Name: "spiffe://example.org/officer/alice"}
	if _, err := ap.Update(ctx, r.ID, func(r *approval.Request) error {
		if _, err := r.Approve([]identity.ID{officer}, r.PayloadSHA256, c.now()); err != nil {
			return err
		}
		return r.Deny([]identity.ID{officer}, "changed my mind", c.now())
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { rs[0].pass(ctx); close(done) }()
	for { // r1 holds the claim and is calling
		mu.Lock()
		started := len(got) > 0
		mu.Unlock()
		if started {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		default:
			rs[1].pass(ctx)
			time.Sleep(20 * time.Millisecond)
		}
	}
	rs[1].pass(ctx)
	t.Logf("deliveries by idempotency key: %v; most calls in flight at once: %d", got, maxInflight)
	for k, n := range got {
		if n > 1 {
			t.Errorf("%s delivered %d times from one outbox by two replicas", k, n)
		}
	}
	if maxInflight > 1 {
		t.Errorf("%d calls in flight at once despite the claim", maxInflight)
	}
}

// A hook that black-holes (each call ends only at the client timeout)
// does not hold up another: each hook has its own loop, and events of no
// request go first.
func TestRegressionBlackHoleHookDelaysHealthyHook(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	stop := make(chan struct{})
	hole := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer hole.Close()
	defer close(stop)
	var gotDown atomic.Int64
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get(HeaderEvent) == "backend.down" {
			gotDown.Store(time.Now().UnixNano())
		}
	}))
	defer healthy.Close()
	const timeout = 300 * time.Millisecond // the default client's is 10 s
	ap, _, rs := reviewWorld(t, c, []Hook{
		{URL: hole.URL, Secret: []byte("a"), Events: []string{approval.EventHeld}},
		{URL: healthy.URL, Secret: []byte("b"), Events: []string{"backend.down"}},
	}, &http.Client{Timeout: timeout})
	const n = 20
	for i := range n {
		holdAt(t, ap, c.now(), "dns:req"+string(rune('a'+i)))
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { rs[0].Run(rctx); close(done) }()
	defer func() { cancel(); <-done }()
	start := time.Now()
	rs[0].Raise("backend.down", "hsm", "the module does not answer")
	for gotDown.Load() == 0 && time.Since(start) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Duration(gotDown.Load() - start.UnixNano()); gotDown.Load() == 0 || took > 10*timeout { // 3 s: the old sequential pass took 20 timeouts, 6 s
		t.Errorf("a healthy hook's backend.down waited %v behind a black-holing hook (%d held requests, %v timeout)", took, n, timeout)
	}
}

// A hook's 307 to an internal address is not followed: the signed event
// goes where the configuration says and nowhere else.
func TestRegressionRedirectFollowed(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	var internal atomic.Value
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		internal.Store(r.Method + " " + r.URL.Path + " sig=" + r.Header.Get(HeaderSignature) + " body=" + string(b[:min(len(b), 80)]))
	}))
	defer inside.Close()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inside.URL+"/latest/meta-data/iam", http.StatusTemporaryRedirect)
	}))
	defer hook.Close()
	_, _, rs := reviewWorld(t, c, []Hook{{URL: hook.URL, Secret: []byte("s"), Events: []string{"backend.down"}}}, nil) // nil: the production client
	rs[0].Raise("backend.down", "hsm", "x")
	rs[0].pass(ctx)
	if v := internal.Load(); v != nil {
		t.Errorf("the redirect was followed: the internal server got %v", v)
	}
}

// An outbox entry no configured hook wants any more (the hook was
// removed or its URL changed) is deleted, not kept toward the bound.
func TestRegressionOrphanEntriesStay(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusServiceUnavailable) }))
	defer down.Close()
	_, st, rs := reviewWorld(t, c, []Hook{{URL: down.URL, Secret: []byte("s"), Events: []string{"backend.down"}}}, nil)
	rs[0].Raise("backend.down", "hsm", "x")
	rs[0].pass(ctx)
	// The operator replaces the hook (new URL, or drops backend.down).
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ok.Close()
	n2 := New(Options{Hooks: []Hook{{URL: ok.URL, Secret: []byte("s"), Events: []string{"store.down"}}}, Outbox: st, Replica: "r1", Now: c.now, Log: slog.New(slog.DiscardHandler)})
	for range 5 {
		c.add(time.Hour)
		n2.pass(ctx)
	}
	all, _ := st.ListAnchors(ctx, outboxPrefix)
	if len(all) != 0 {
		t.Errorf("%d outbox entries no hook will ever take are kept for good", len(all))
	}
}

// A held jwt.sign request's approval.held event carries none of its
// summary (the token's claims): that stays in the console.
func TestRegressionHeldEventCarriesClaims(t *testing.T) {
	_, sum, err := jwtpurpose.Purpose{}.Review(context.Background(), purpose.Deps{}, "", &sigilv1.SignJWTRequest{KeyId: "k",
		ClaimsJson: []byte(`{"sub":"patient-4711","email":"jane@example.org","diagnosis":"..."}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := New(Options{Now: time.Now})
	b, _ := json.Marshal(n.requestBody(&approval.Request{ID: "x", Operation: "jwt.sign", Summary: approval.Clip(sum)}, approval.EventHeld))
	t.Logf("%s", b)
	if strings.Contains(string(b), "patient-4711") {
		t.Errorf("the webhook body carries the request's claims")
	}
}
