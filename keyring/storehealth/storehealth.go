package storehealth

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/tracing"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/signer"
)

// Store is what the server needs of its keyring store: keys, the ledger
// and the anchors.
type Store interface {
	keyring.Store
	keyring.Ledger
	keyring.Anchors
}

// Options configure a Guarded store.
type Options struct {
	// Timeout bounds each store call (DefaultTimeout if zero): a call the
	// store does not answer in time fails Unavailable and asks for a probe.
	Timeout time.Duration
	// HealthInterval is how often the store is probed
	// (DefaultHealthInterval if zero).
	HealthInterval time.Duration
}

// Defaults. A store call waits at most DefaultTimeout, so a request that
// needs the store ends within it while the store is gone; the probe then
// finds it down within about two intervals, and it is up again within an
// interval of its return.
const (
	DefaultTimeout        = 1500 * time.Millisecond
	DefaultHealthInterval = time.Second
)

// probeAnchor is the anchor the probe reads: absent is healthy, since a
// read that answers at all proves the store answers (etcd: a linearizable
// read needs the quorum).
const probeAnchor = "sigil.health"

// Guarded is a store with a health loop and fail-fast calls.
type Guarded struct {
	inner   Store
	timeout time.Duration
	mon     *signer.Monitor

	// calls are the deadlines of the calls in flight, by a sequence
	// number: a store that ignores its context (bbolt inside a write
	// whose fsync hangs) is found out by a call kept past its deadline,
	// although a probe that reads still answers.
	mu    sync.Mutex
	seq   uint64
	calls map[uint64]time.Time
}

var _ Store = (*Guarded)(nil)

// Guard wraps s; Start begins probing, Close stops it and closes s.
func Guard(s Store, o Options) *Guarded {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	g := &Guarded{inner: s, timeout: o.Timeout, calls: map[uint64]time.Time{}}
	g.mon = signer.NewMonitor("keyring store", o.HealthInterval, g.probe, nil)
	return g
}

// Start runs the health loop until Close.
func (g *Guarded) Start() { g.mon.Start() }

// Close stops the health loop and closes the store.
func (g *Guarded) Close() error {
	g.mon.Stop()
	return g.inner.Close()
}

// Health reports what the probe last found.
func (g *Guarded) Health() signer.Health { return g.mon.Health() }

// Check probes now and returns what it found (for tests and start-up).
func (g *Guarded) Check(ctx context.Context) signer.Health { return g.mon.Check(ctx) }

// Unwrap returns the store guarded.
func (g *Guarded) Unwrap() Store { return g.inner }

// probe reads the probe's anchor within a call's deadline; what it
// returns is the reason readiness shows.
func (g *Guarded) probe(ctx context.Context) error {
	if late := g.overdue(); late > hungAfter {
		return errs.New(errs.Unavailable, "a call has waited %v past its deadline (the store hangs)", late.Round(time.Millisecond))
	}
	pctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	_, err := g.inner.GetAnchor(pctx, probeAnchor)
	switch {
	case err == nil || errs.Is(err, errs.NotFound):
		return nil
	case pctx.Err() != nil && ctx.Err() == nil:
		return errs.New(errs.Unavailable, "no answer within %v", g.timeout)
	}
	return err
}

// begin records a call in flight until the returned func is called.
func (g *Guarded) begin(deadline time.Time) func() {
	g.mu.Lock()
	g.seq++
	n := g.seq
	g.calls[n] = deadline
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		delete(g.calls, n)
		g.mu.Unlock()
	}
}

// overdue is how long the most overdue call in flight is past its
// deadline; zero if none is.
func (g *Guarded) overdue() time.Duration {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var late time.Duration
	for _, d := range g.calls {
		late = max(late, now.Sub(d))
	}
	return late
}

// hungAfter is how long past its deadline a call must be held before the
// store is taken to hang: a write waiting its turn behind slow fsyncs on a
// busy machine is not an outage.
const hungAfter = 5 * time.Second

// ErrDown is the cause of every error a call gets because the store is
// down or did not answer in time.
var ErrDown = errors.New("keyring store unreachable")

// call runs fn within timeout (or the caller's deadline, if sooner),
// failing at once while the store is known to be down.
func call[T any](ctx context.Context, g *Guarded, op string, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	if h := g.mon.Health(); !h.Up {
		return zero, errs.New(errs.Unavailable, "%w: %s", ErrDown, h.Detail)
	}
	if tracing.Starts(ctx) { // the name costs an allocation
		var span trace.Span
		ctx, span = tracing.Start(ctx, "sigil.store."+op)
		defer span.End()
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := cctx.Deadline()
	defer g.begin(deadline)()
	v, err := fn(cctx)
	switch {
	case err == nil:
		return v, nil
	case ctx.Err() != nil: // the caller's own deadline or cancellation
		return v, err
	case cctx.Err() != nil:
		g.mon.Poke()
		return zero, errs.New(errs.Unavailable, "%w: no answer within %v", ErrDown, timeout)
	case errs.Is(err, errs.Unavailable):
		g.mon.Poke()
	}
	return v, err
}

func do(ctx context.Context, g *Guarded, op string, fn func(context.Context) error) error {
	_, err := call(ctx, g, op, g.timeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}

func (g *Guarded) Get(ctx context.Context, id string) (*keyring.Key, error) {
	return call(ctx, g, "get", g.timeout, func(ctx context.Context) (*keyring.Key, error) { return g.inner.Get(ctx, id) })
}

// List reads every key, at start and when a replica catches up, never on
// a request's path: it gets four times a call's deadline.
func (g *Guarded) List(ctx context.Context) ([]*keyring.Key, error) {
	return call(ctx, g, "list", 4*g.timeout, g.inner.List)
}

func (g *Guarded) Put(ctx context.Context, k *keyring.Key) (int64, error) {
	return call(ctx, g, "put", g.timeout, func(ctx context.Context) (int64, error) { return g.inner.Put(ctx, k) })
}

func (g *Guarded) Delete(ctx context.Context, id string, rev int64) error {
	return do(ctx, g, "delete", func(ctx context.Context) error { return g.inner.Delete(ctx, id, rev) })
}

func (g *Guarded) UpdateLedger(ctx context.Context, id string, fn func(*keyring.LedgerRecord) error) error {
	return do(ctx, g, "update_ledger", func(ctx context.Context) error { return g.inner.UpdateLedger(ctx, id, fn) })
}

func (g *Guarded) ReadLedger(ctx context.Context, id string) (*keyring.LedgerRecord, error) {
	return call(ctx, g, "read_ledger", g.timeout, func(ctx context.Context) (*keyring.LedgerRecord, error) { return g.inner.ReadLedger(ctx, id) })
}

func (g *Guarded) PutAnchor(ctx context.Context, name string, value []byte) error {
	return do(ctx, g, "put_anchor", func(ctx context.Context) error { return g.inner.PutAnchor(ctx, name, value) })
}

func (g *Guarded) CreateAnchor(ctx context.Context, name string, value []byte) error {
	return do(ctx, g, "create_anchor", func(ctx context.Context) error { return g.inner.CreateAnchor(ctx, name, value) })
}

func (g *Guarded) GetAnchor(ctx context.Context, name string) ([]byte, error) {
	return call(ctx, g, "get_anchor", g.timeout, func(ctx context.Context) ([]byte, error) { return g.inner.GetAnchor(ctx, name) })
}

func (g *Guarded) ListAnchors(ctx context.Context, prefix string) (map[string][]byte, error) {
	return call(ctx, g, "list_anchors", g.timeout, func(ctx context.Context) (map[string][]byte, error) { return g.inner.ListAnchors(ctx, prefix) })
}

func (g *Guarded) UpdateAnchor(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) error {
	return do(ctx, g, "update_anchor", func(ctx context.Context) error { return g.inner.UpdateAnchor(ctx, name, fn) })
}

// Snapshot reads the whole store, if it can be snapshotted, within
// snapshotTimeout (a whole store takes longer than one record).
func (g *Guarded) Snapshot(ctx context.Context) (*keyring.Snapshot, error) {
	s, ok := g.inner.(keyring.Snapshotter)
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "this keyring store cannot be backed up")
	}
	return call(ctx, g, "snapshot", snapshotTimeout, func(ctx context.Context) (*keyring.Snapshot, error) { return s.Snapshot(ctx) })
}

const snapshotTimeout = time.Minute
