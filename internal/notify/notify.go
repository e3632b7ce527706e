package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/errs"
)

// Events are the event types a hook may ask for.
var Events = []string{
	approval.EventHeld, approval.EventApproved, approval.EventDenied, approval.EventExpired, approval.EventRan,
	"backend.down", "backend.up", "store.down", "store.up", "audit.tamper",
}

// Hook is one webhook: where events go, the HMAC key their bodies are
// signed with, and which events it wants.
type Hook struct {
	URL    string
	Secret []byte
	Events []string
}

// id names the hook in a request's deliveries: a digest of its URL, so a
// hook keeps its deliveries across restarts and its URL stays out of the
// store.
func (h Hook) id() string {
	sum := sha256.Sum256([]byte(h.URL))
	return hex.EncodeToString(sum[:6])
}

func (h Hook) wants(ev string) bool { return slices.Contains(h.Events, ev) }

// Anchors is where events that belong to no request wait: the keyring
// store's anchors.
type Anchors interface {
	CreateAnchor(ctx context.Context, name string, value []byte) error
	ListAnchors(ctx context.Context, prefix string) (map[string][]byte, error)
	UpdateAnchor(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) error
}

// Options configure a Notifier.
type Options struct {
	Hooks     []Hook
	Approvals *approval.Store // the requests whose outboxes are delivered
	Outbox    Anchors         // where the other events wait
	Replica   string          // this replica, as holder of a delivery
	Console   string          // the console's origin, for links; none if ""
	Log       *slog.Logger
	Client    *http.Client // a 10 s timeout if nil
	Now       func() time.Time
	Interval  time.Duration // between delivery passes; 1 s if zero
}

// Timings of delivery.
const (
	holdFor    = 30 * time.Second // a delivery round's claim on an outbox
	backoffMin = time.Second
	backoffMax = 30 * time.Second
	maxQueued  = 1000 // events raised and not yet written to the store
	maxWaiting = 1000 // events in the store's outbox
)

// Notifier delivers events to webhooks, at least once, from outboxes in
// the keyring store: each held request's own (written with the change
// that raised the event) and, for events of no request (a backend or
// the store down or up, a tamper), entries of their own. Any replica
// may deliver any entry; a claim keeps two from doing it at once, and a
// crashed holder's claim lapses. The receiver tells repeats by the
// Idempotency-Key header, one per event.
type Notifier struct {
	o       Options
	mu      sync.Mutex
	queued  []Body // raised here, not yet in the store
	kick    chan struct{}
	metrics metrics
}

// New makes a Notifier; Run delivers.
func New(o Options) *Notifier {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	// A hook's redirect is not followed: the signed event goes where the
	// configuration says (https, or http to loopback), nowhere a hook's
	// answer points to.
	o.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	n := &Notifier{o: o, kick: make(chan struct{}, 1), metrics: newMetrics()}
	for _, ev := range Events { // at zero before the first event: an alert on the rate needs the series
		n.metrics.delivered.WithLabelValues(ev)
		n.metrics.failed.WithLabelValues(ev)
	}
	return n
}

// Body is what a webhook receives, as JSON.
type Body struct {
	ID       string         `json:"id"` // the idempotency key: one per event
	Type     string         `json:"type"`
	Time     time.Time      `json:"time"`
	Text     string         `json:"text"` // one line, as Slack's incoming webhooks take it
	Link     string         `json:"link,omitempty"`
	Subject  string         `json:"subject,omitempty"` // the backend, store or log an event is about
	Detail   string         `json:"detail,omitempty"`
	Replica  string         `json:"replica,omitempty"`
	Approval *ApprovalEvent `json:"approval,omitempty"`
}

// ApprovalEvent is a held request as an event shows it: what an approver
// needs to open the console, never what the request holds (its summary
// may hold claims, digests, a wrapped key: those stay in the console).
type ApprovalEvent struct {
	ID        string    `json:"id"`
	Operation string    `json:"operation"`
	KeyID     string    `json:"key_id,omitempty"`
	Namespace string    `json:"namespace,omitempty"`
	Requester string    `json:"requester"`
	State     string    `json:"state"`
	Approvals int       `json:"approvals"`
	Quorum    int       `json:"quorum"`
	Expires   time.Time `json:"expires"`
}

// Raise queues an event of no request (backend.down, store.up,
// audit.tamper…) about subject; Run writes it to the store's outbox and
// delivers it. It never blocks: past maxQueued events waiting for the
// store, the oldest is dropped (and counted).
func (n *Notifier) Raise(typ, subject, detail string) {
	b := Body{ID: newID(), Type: typ, Time: n.o.Now().UTC(), Subject: subject, Detail: detail, Replica: n.o.Replica,
		Text: fmt.Sprintf("Sigil %s: %s %s on replica %s", typ, subject, detail, n.o.Replica)}
	n.mu.Lock()
	if len(n.queued) >= maxQueued {
		n.queued = n.queued[1:]
		n.metrics.dropped.Inc()
	}
	n.queued = append(n.queued, b)
	n.mu.Unlock()
	n.Kick()
}

// Kick asks for a delivery pass now (a request changed).
func (n *Notifier) Kick() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends: each hook in a loop of its own (a hook
// that hangs delays only itself), a pass every Interval; the events
// raised here are written to the store as they come.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, h := range n.o.Hooks {
		wg.Go(func() { n.every(ctx, nil, func(ctx context.Context) { n.passFor(ctx, h) }) })
	}
	n.every(ctx, n.kick, n.persist)
	wg.Wait()
}

// every runs fn now, then every Interval or when woken, until ctx ends.
func (n *Notifier) every(ctx context.Context, wake <-chan struct{}, fn func(context.Context)) {
	t := time.NewTicker(n.o.Interval)
	defer t.Stop()
	for {
		fn(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// pass writes queued events to the outbox and delivers, hook after hook,
// every delivery due (Run runs the hooks apart; tests step through).
func (n *Notifier) pass(ctx context.Context) {
	n.persist(ctx)
	for _, h := range n.o.Hooks {
		n.passFor(ctx, h)
	}
}

// passFor delivers to hook h every event due: those of no request first
// (a backend down is news), then each held request's.
func (n *Notifier) passFor(ctx context.Context, h Hook) {
	if n.o.Outbox != nil {
		entries, err := n.o.Outbox.ListAnchors(ctx, outboxPrefix)
		if err != nil {
			n.o.Log.Warn("notify: listing the outbox", "err", err)
		}
		n.metrics.waiting.Set(float64(len(entries)))
		for name, b := range entries {
			var e entry
			if json.Unmarshal(b, &e) == nil && n.due(&e.Outbox, []string{e.Body.Type}, h, n.o.Now()) {
				n.deliverEntry(ctx, name, h)
			}
		}
	}
	if n.o.Approvals != nil {
		all, err := n.o.Approvals.List(ctx)
		if err != nil {
			n.o.Log.Warn("notify: listing held requests", "err", err)
		}
		for _, r := range all {
			if n.due(&r.Outbox, approvalEvents(r, n.o.Now()), h, n.o.Now()) {
				n.deliverRequest(ctx, r.ID, h)
			}
		}
	}
}

// approvalEvents are the events request r has raised, with its expiry
// (a change of time, which no update wrote) once it has passed.
func approvalEvents(r *approval.Request, now time.Time) []string {
	evs := slices.Clone(r.Outbox.Events)
	if r.StateAt(now) == approval.Expired && !slices.Contains(evs, approval.EventExpired) {
		evs = append(evs, approval.EventExpired)
	}
	return evs
}

// due reports whether outbox o has a delivery to hook h due now: an
// event h wants that has not reached it, past h's backoff, and h's
// deliveries of o not claimed by another replica (or that claim lapsed).
func (n *Notifier) due(o *approval.Outbox, events []string, h Hook, now time.Time) bool {
	if st := o.Hooks[h.id()]; st != nil {
		if now.Before(st.Next) || st.Holder != "" && st.Holder != n.o.Replica && now.Before(st.Until) {
			return false
		}
	}
	return len(pending(o, events, h)) > 0
}

// pending are the events of an outbox hook h wants and has not had.
func pending(o *approval.Outbox, events []string, h Hook) []string {
	var out []string
	for _, ev := range events {
		if h.wants(ev) && !slices.Contains(o.Delivered, key(ev, h)) {
			out = append(out, ev)
		}
	}
	return out
}

// key names the delivery of event ev to hook h.
func key(ev string, h Hook) string { return ev + "@" + h.id() }

var errNotDue = errs.New(errs.FailedPrecondition, "not due")

// claim makes this replica the one delivering outbox o to hook h for
// holdFor, if a delivery is due.
func (n *Notifier) claim(o *approval.Outbox, events []string, h Hook, now time.Time) error {
	if !n.due(o, events, h, now) {
		return errNotDue
	}
	if o.Hooks == nil {
		o.Hooks = map[string]*approval.HookState{}
	}
	st := o.Hooks[h.id()]
	if st == nil {
		st = &approval.HookState{}
		o.Hooks[h.id()] = st
	}
	st.Holder, st.Until = n.o.Replica, now.Add(holdFor)
	return nil
}

// delivered records one delivery as made.
func delivered(o *approval.Outbox, k string) {
	if !slices.Contains(o.Delivered, k) {
		o.Delivered = append(o.Delivered, k)
	}
}

// release ends this replica's round of deliveries of o to h: a round
// that failed backs off, doubling from backoffMin to backoffMax.
func (n *Notifier) release(o *approval.Outbox, h Hook, failed bool) {
	st := o.Hooks[h.id()]
	if st == nil {
		return
	}
	st.Next = time.Time{}
	if failed {
		st.Attempts++
		st.Next = n.o.Now().Add(min(backoffMax, backoffMin<<min(st.Attempts-1, 8)))
	} else {
		st.Attempts = 0
	}
	if st.Holder == n.o.Replica {
		st.Holder, st.Until = "", time.Time{}
	}
}

// round delivers events to h one after another, each recorded by
// record as it is made (a crash loses none made), while the claim taken
// at start leaves time for one more call; it stops at the first failure
// (the hook is failing: the rest wait for the backoff). It reports
// whether a delivery failed.
func (n *Notifier) round(ctx context.Context, h Hook, start time.Time, events []string, body func(ev string) Body, record func(k string) error) bool {
	for _, ev := range events {
		if n.o.Now().Add(n.o.Client.Timeout).After(start.Add(holdFor)) {
			return false // the claim's time is up: the next pass goes on
		}
		if err := n.post(ctx, h, body(ev)); err != nil {
			n.metrics.failed.WithLabelValues(ev).Inc()
			n.o.Log.Warn("notify: delivery failed; retried with backoff", "event", ev, "hook", h.id(), "err", err)
			return true
		}
		n.metrics.delivered.WithLabelValues(ev).Inc()
		if err := record(key(ev, h)); err != nil {
			n.o.Log.Warn("notify: recording a delivery (it will be made again)", "event", ev, "hook", h.id(), "err", err)
			return true
		}
	}
	return false
}

// deliverRequest claims the deliveries of request id's outbox to h (in
// one update, with the expiry raised if it passed), makes them, and
// releases the claim.
func (n *Notifier) deliverRequest(ctx context.Context, id string, h Hook) {
	now := n.o.Now()
	r, err := n.o.Approvals.Update(ctx, id, func(r *approval.Request) error {
		if r.StateAt(now) == approval.Expired {
			r.Outbox.Raise(approval.EventExpired)
		}
		return n.claim(&r.Outbox, r.Outbox.Events, h, now)
	})
	if err != nil {
		return
	}
	update := func(fn func(o *approval.Outbox)) error {
		_, err := n.o.Approvals.Update(ctx, id, func(r *approval.Request) error { fn(&r.Outbox); return nil })
		return err
	}
	failed := n.round(ctx, h, now, pending(&r.Outbox, r.Outbox.Events, h), func(ev string) Body { return n.requestBody(r, ev) },
		func(k string) error { return update(func(o *approval.Outbox) { delivered(o, k) }) })
	if err := update(func(o *approval.Outbox) { n.release(o, h, failed) }); err != nil {
		n.o.Log.Warn("notify: releasing a delivery claim (it lapses)", "approval", id, "err", err)
	}
}

// Headers of a delivery.
const (
	HeaderSignature   = "X-Sigil-Signature" // t=UNIX,v1=HEX(HMAC-SHA256(secret, "UNIX.BODY"))
	HeaderIdempotency = "Idempotency-Key"
	HeaderEvent       = "X-Sigil-Event"
)

// post sends b to hook h, signed; a 2xx answer is delivery.
func (n *Notifier) post(ctx context.Context, h Hook, b Body) error {
	body, err := json.Marshal(b)
	if err != nil {
		return err
	}
	ts := strconv.FormatInt(n.o.Now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderIdempotency, b.ID)
	req.Header.Set(HeaderEvent, b.Type)
	req.Header.Set(HeaderSignature, "t="+ts+",v1="+Sign(h.Secret, ts, body))
	start := time.Now()
	resp, err := n.o.Client.Do(req)
	n.metrics.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the hook answered %s", resp.Status)
	}
	return nil
}

// Sign is the signature of a delivery's body sent at unix time ts: what
// a receiver recomputes with the shared secret, and compares in constant
// time (and rejects when ts is far from its clock, against replays).
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// requestBody is the body of request r's event ev.
func (n *Notifier) requestBody(r *approval.Request, ev string) Body {
	a := &ApprovalEvent{ID: r.ID, Operation: r.Operation, KeyID: r.KeyID, Namespace: r.Namespace, Requester: r.Requester,
		State: string(r.StateAt(n.o.Now())), Approvals: len(r.Approvals), Quorum: r.Quorum, Expires: r.Expires}
	b := Body{ID: r.ID + "." + ev, Type: ev, Time: n.o.Now().UTC(), Approval: a,
		Text: fmt.Sprintf("Sigil %s: %s on %s by %s (%d of %d approvals)", ev, r.Operation, or(r.KeyID, "-"), r.Requester, len(r.Approvals), r.Quorum)}
	if n.o.Console != "" {
		b.Link = n.o.Console + "/approvals/" + r.ID
		b.Text += " " + b.Link
	}
	return b
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// metrics are the sigil_notify_* series.
type metrics struct {
	delivered, failed *prometheus.CounterVec
	dropped           prometheus.Counter
	waiting           prometheus.Gauge
	latency           prometheus.Histogram
}

func newMetrics() metrics {
	return metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sigil_notify_delivered_total", Help: "Events a webhook took (2xx), by event."}, []string{"event"}),
		failed:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sigil_notify_failed_total", Help: "Delivery attempts that failed (retried with backoff), by event."}, []string{"event"}),
		dropped:   prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_notify_dropped_total", Help: "Events dropped: more were raised while the store could not take them than are kept waiting."}),
		waiting:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "sigil_notify_outbox_entries", Help: "Events of no request waiting in the store's outbox."}),
		latency:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sigil_notify_delivery_seconds", Help: "Time of one webhook call.", Buckets: prometheus.DefBuckets}),
	}
}

// Describe and Collect make the Notifier the collector of its metrics.
func (n *Notifier) Describe(ch chan<- *prometheus.Desc) {
	n.metrics.delivered.Describe(ch)
	n.metrics.failed.Describe(ch)
	n.metrics.dropped.Describe(ch)
	n.metrics.waiting.Describe(ch)
	n.metrics.latency.Describe(ch)
}

func (n *Notifier) Collect(ch chan<- prometheus.Metric) {
	n.metrics.delivered.Collect(ch)
	n.metrics.failed.Collect(ch)
	n.metrics.dropped.Collect(ch)
	n.metrics.waiting.Collect(ch)
	n.metrics.latency.Collect(ch)
}
