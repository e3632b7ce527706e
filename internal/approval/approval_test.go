package approval

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
)

var (
	t0        = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	requester = identity.ID{Kind: identity.DNS, Name: "treasury.internal"}
	alice     = identity.ID{Kind: identity.URI, Name: "spiffe://example.org/officer/alice"}
	bob       = identity.ID{Kind: identity.URI, Name: "spiffe://example.org/officer/bob"}
	mallory   = identity.ID{Kind: identity.URI, Name: "spiffe://example.org/mallory"}
)

func held() *Request {
	return &Request{ID: NewID(), Method: "/m", Operation: "eth.sign_tx", KeyID: "k", Requester: requester.String(),
		Payload: []byte("p"), PayloadSHA256: "abc", Approvers: []string{"spiffe://example.org/officer/*"}, Quorum: 2,
		Created: t0, Expires: t0.Add(time.Hour), State: Pending}
}

func kind(t *testing.T, what string, err error, want errs.Kind) {
	t.Helper()
	if !errs.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

// The transitions refuse every wrong decision with its own kind, count
// each approver once, and end in approved at the quorum.
func TestDecisions(t *testing.T) {
	r := held()
	_, err := r.Approve([]identity.ID{requester, alice}, "abc", t0) // the requester, under a second identity an approver pattern names
	kind(t, "the requester approving", err, errs.PermissionDenied)
	_, err = r.Approve([]identity.ID{mallory}, "abc", t0)
	kind(t, "a stranger approving", err, errs.PermissionDenied)
	_, err = r.Approve([]identity.ID{alice}, "abd", t0)
	kind(t, "approving another payload", err, errs.FailedPrecondition)
	if done, err := r.Approve([]identity.ID{alice}, "abc", t0); done || err != nil {
		t.Fatal(done, err)
	}
	_, err = r.Approve([]identity.ID{alice}, "abc", t0)
	kind(t, "approving twice", err, errs.AlreadyExists)
	_, err = r.Claim("r1", t0, time.Minute)
	kind(t, "claiming before the quorum", err, errs.FailedPrecondition)
	bobAsAlice := []identity.ID{bob, alice} // one certificate with both identities, the other first
	_, err = r.Approve(bobAsAlice, "abc", t0)
	kind(t, "a second vote under another identity of the same certificate", err, errs.AlreadyExists)
	if done, err := r.Approve([]identity.ID{bob}, "abc", t0.Add(time.Minute)); !done || err != nil || r.State != Approved {
		t.Fatal(done, err, r.State)
	}
	if r.StateAt(t0.Add(2*time.Hour)) != Approved {
		t.Fatal("an approved request expired")
	}
	if err := r.Deny([]identity.ID{bob}, "changed my mind", t0.Add(2*time.Minute)); err != nil || r.State != Denied {
		t.Fatalf("denying an approved request before it runs: %v %v", err, r.State)
	}
}

// The requester is every identity of its certificate.
func TestRequesterUnderAnyIdentity(t *testing.T) {
	r := held()
	r.Requesters = []string{requester.String(), alice.String()}
	_, err := r.Approve([]identity.ID{alice}, "abc", t0)
	kind(t, "the requester's second identity on another certificate", err, errs.PermissionDenied)
}

// Of two runners one claims; a lapsed claim passes on, and the first
// runner can then no longer record a result.
func TestClaimIsALease(t *testing.T) {
	r := held()
	r.State, r.Idempotent = Approved, true
	if run, err := r.Claim("r1", t0, time.Minute); !run || err != nil || r.Attempts != 1 {
		t.Fatal(run, err)
	}
	_, err := r.Claim("r2", t0.Add(59*time.Second), time.Minute)
	kind(t, "a second claim within the lease", err, errs.FailedPrecondition)
	kind(t, "a denial within the lease", r.Deny([]identity.ID{alice}, "", t0.Add(59*time.Second)), errs.FailedPrecondition)
	if run, err := r.Claim("r2", t0.Add(61*time.Second), time.Minute); !run || err != nil || r.Attempts != 2 {
		t.Fatal(run, err)
	}
	kind(t, "the first runner finishing", r.Finish("r1", []byte("x"), "", "", t0), errs.Aborted)
	if err := r.Finish("r2", nil, "PermissionDenied", "no", t0); err != nil || r.State != Failed {
		t.Fatal(err, r.State)
	}
	_, err = r.Claim("r3", t0.Add(time.Hour), time.Minute)
	kind(t, "claiming a finished request", err, errs.FailedPrecondition)
}

// A request that is not idempotent never runs twice: a lapsed claim
// fails it, as interrupted.
func TestInterruptedRunIsNotRepeated(t *testing.T) {
	r := held()
	r.State = Approved
	if run, err := r.Claim("r1", t0, time.Minute); !run || err != nil {
		t.Fatal(run, err)
	}
	if run, err := r.Claim("r2", t0.Add(61*time.Second), time.Minute); run || err != nil || r.State != Failed || r.ErrorCode != "Aborted" {
		t.Fatalf("a lapsed claim of a request that is not idempotent: run %v, %v, %s %s", run, err, r.State, r.ErrorCode)
	}
}

func TestExpiryAndDenial(t *testing.T) {
	r := held()
	_, err := r.Approve([]identity.ID{alice}, "abc", t0.Add(time.Hour))
	kind(t, "approving at the expiry", err, errs.FailedPrecondition)
	if r.StateAt(t0.Add(time.Hour)) != Expired || r.Live(t0.Add(time.Hour)) {
		t.Fatal("not expired")
	}
	r = held()
	kind(t, "the requester denying", r.Deny([]identity.ID{requester}, "", t0), errs.PermissionDenied)
	if err := r.Deny([]identity.ID{alice}, "no", t0); err != nil || r.State != Denied || r.DeniedBy != alice.String() {
		t.Fatal(err, r)
	}
	_, err = r.Approve([]identity.ID{bob}, "abc", t0)
	kind(t, "approving a denied request", err, errs.FailedPrecondition)
}

func TestCheckID(t *testing.T) {
	if CheckID(NewID()) != nil {
		t.Fatal("a fresh ID refused")
	}
	for _, bad := range []string{"", "../approvals/x", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcdef0"} {
		kind(t, fmt.Sprintf("ID %q", bad), CheckID(bad), errs.InvalidArgument)
	}
}

func openStore(t *testing.T) *Store {
	b, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return NewStore(b)
}

// A retry of a live request returns it; a requester's live requests and
// the payload's size are bounded; ended requests are pruned after
// Retention.
func TestHoldBoundsAndPrunes(t *testing.T) {
	s, ctx := openStore(t), context.Background()
	first := held()
	if got, err := s.Hold(ctx, first, t0); err != nil || got.ID != first.ID {
		t.Fatal(got, err)
	}
	if all, err := s.List(ctx); err != nil || len(all) != 1 || all[0].Payload != nil {
		t.Fatalf("a listing reads payloads: %v %v", all, err)
	}
	if p, err := s.Payload(ctx, first.ID); err != nil || string(p) != "p" {
		t.Fatalf("the payload kept apart: %q %v", p, err)
	}
	retry := held()
	if got, err := s.Hold(ctx, retry, t0); err != nil || got.ID != first.ID {
		t.Fatalf("a retry: %v %v", got, err)
	}
	for i := 1; i < PerRequester; i++ {
		r := held()
		r.PayloadSHA256 = fmt.Sprint(i)
		if _, err := s.Hold(ctx, r, t0); err != nil {
			t.Fatal(i, err)
		}
	}
	over := held()
	over.PayloadSHA256 = "over"
	_, err := s.Hold(ctx, over, t0)
	kind(t, "one request too many", err, errs.ResourceExhausted)
	big := held()
	big.Payload = make([]byte, MaxPayload+1)
	_, err = s.Hold(ctx, big, t0)
	kind(t, "a payload too large", err, errs.InvalidArgument)

	later := t0.Add(time.Hour + Retention + time.Second) // every request expired more than Retention ago
	if all, err := s.Sweep(ctx, later); err != nil || len(all) != 0 {
		t.Fatalf("after the retention: %d kept, %v", len(all), err)
	}
	if _, err := s.Get(ctx, first.ID); !errs.Is(err, errs.NotFound) {
		t.Fatalf("a pruned request: %v", err)
	}
	if _, err := s.Payload(ctx, first.ID); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("a pruned request's payload: %v", err)
	}
}

// Of approvers racing on one request, every approval counts once and
// exactly one completes the quorum.
func TestRacingApprovalsCompleteTheQuorumOnce(t *testing.T) {
	s, ctx := openStore(t), context.Background()
	r := held()
	r.Quorum = 5
	if _, err := s.Hold(ctx, r, t0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	completed := 0
	for i := range 8 {
		wg.Go(func() {
			who := identity.ID{Kind: identity.URI, Name: fmt.Sprintf("spiffe://example.org/officer/%d", i)}
			var done bool
			_, err := s.Update(ctx, r.ID, func(r *Request) (err error) { done, err = r.Approve([]identity.ID{who}, "abc", t0); return err })
			mu.Lock()
			defer mu.Unlock()
			if done && err == nil {
				completed++
			}
		})
	}
	wg.Wait()
	got, err := s.Get(ctx, r.ID)
	if err != nil || completed != 1 || got.State != Approved || len(got.Approvals) != 5 {
		t.Fatalf("%d completed the quorum; stored %v with %d approvals (%v)", completed, got.State, len(got.Approvals), err)
	}
}

func TestPrintableEscapesWhatATerminalActsOn(t *testing.T) {
	for in, want := range map[string]string{
		"Token\n  spender: none": `Token\u000a  spender: none`,
		"red\x1b[31m":            `red\u001b[31m`,
		"abc\u202edcba":          `abc\u202edcba`,
		"bad \xff byte":          "bad \ufffd byte",
		"plain 1.5 ETH":          "plain 1.5 ETH",
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClipKeepsRecordsSmall(t *testing.T) {
	long := strings.Repeat("é", MaxField) // 2 bytes a rune: the cut falls inside one
	got := Clip([]Field{{Name: "domain", Value: long}, {Name: "to", Value: "0x35"}})
	if len(got[0].Value) > MaxField+len("…") || !utf8.ValidString(got[0].Value) || !strings.HasSuffix(got[0].Value, "…") || got[1].Value != "0x35" {
		t.Fatalf("clipped to %d bytes: %q…", len(got[0].Value), got[0].Value[:8])
	}
}

// A run of an idempotent request that meets an outage or a conflict to
// retry (Unavailable, Aborted) leaves it approved for the next run; any
// other error ends it, and a request that is not idempotent ends on any.
func TestOutagesLeaveIdempotentRequestsApproved(t *testing.T) {
	for _, tc := range []struct {
		idempotent bool
		code       string
		want       State
	}{
		{true, "Unavailable", Approved}, {true, "Aborted", Approved}, {true, "PermissionDenied", Failed}, {true, "", Done},
		{false, "Unavailable", Failed}, {false, "Aborted", Failed},
	} {
		r := held()
		r.State, r.Idempotent = Approved, tc.idempotent
		if run, err := r.Claim("r1", t0, time.Minute); !run || err != nil {
			t.Fatal(run, err)
		}
		if err := r.Finish("r1", nil, tc.code, "m", t0); err != nil || r.State != tc.want {
			t.Errorf("idempotent %v, %q: %v %s, want %s", tc.idempotent, tc.code, err, r.State, tc.want)
		}
		if tc.want == Approved {
			if run, err := r.Claim("r2", t0.Add(time.Second), time.Minute); !run || err != nil {
				t.Errorf("the next run of a request left approved: %v %v", run, err)
			}
		}
	}
}

// One tenant's requests cannot fill the store another needs: a namespace
// holds at most PerNamespace, however many identities ask.
func TestNamespaceHoldsItsShareOnly(t *testing.T) {
	s, ctx := openStore(t), context.Background()
	for i := range PerNamespace {
		r := held()
		r.Namespace, r.Requester, r.PayloadSHA256 = "tenant-a", fmt.Sprintf("spiffe://example.org/tenant-a/%d", i), fmt.Sprint(i)
		if _, err := s.Hold(ctx, r, t0); err != nil {
			t.Fatal(i, err)
		}
	}
	over := held()
	over.Namespace, over.Requester = "tenant-a", "spiffe://example.org/tenant-a/new"
	_, err := s.Hold(ctx, over, t0)
	kind(t, "tenant A past its share", err, errs.ResourceExhausted)
	other := held()
	other.Namespace, other.Requester = "tenant-b", "spiffe://example.org/tenant-b/x"
	if _, err := s.Hold(ctx, other, t0); err != nil {
		t.Errorf("tenant B, after A took its share: %v", err)
	}
	if _, err := s.Hold(ctx, held(), t0); err != nil {
		t.Errorf("root, after A took its share: %v", err)
	}
}
