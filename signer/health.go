package signer

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Health is what a backend's monitor found on its last probe.
type Health struct {
	Up bool
	// Detail says why the backend is down; empty while it is up.
	Detail string
	// LastHealthy is when a probe last succeeded.
	LastHealthy time.Time
	// Recoveries counts recovery attempts (a PKCS#11 module
	// re-initialised).
	Recoveries uint64
}

// HealthReporter is the ability to report health as a background probe
// found it, for readiness and metrics. A reporter is cheap to ask: it
// never calls the backend.
type HealthReporter interface {
	Health() Health
}

// ErrKeyMissing is the cause of an error for a key reference that the
// backend does not find although the keyring records it. It is never
// NotFound (the key ID exists): it is Unavailable, an outage or an object
// deleted behind Sigil's back, and worth an alarm.
var ErrKeyMissing = errors.New("key object missing from its backend")

// Monitor timing. A backend is down after failThreshold probes in a row
// fail; recoveries are then tried with a backoff from recoverBackoff
// doubling up to maxRecoverBackoff, so a backend that returns signs again
// within maxRecoverBackoff (plus a probe) without a restart.
const (
	DefaultHealthInterval = 2 * time.Second
	failThreshold         = 2
	probeTimeout          = 2 * time.Second
	recoverBackoff        = time.Second
	maxRecoverBackoff     = 8 * time.Second
	// minProbeGap spaces probes that requests ask for (Poke), so a burst
	// of failing requests costs one probe.
	minProbeGap = 100 * time.Millisecond
)

// Monitor watches a backend: every interval (jittered, so replicas do
// not probe in step) it runs probe, which must prove the backend can find
// an object it should hold, not merely that a connection is open. After
// failThreshold failures it reports the backend down, and if recover is
// set calls it with a capped exponential backoff until a probe succeeds.
// Requests ask Err before they touch the backend, so they fail fast while
// it is down instead of each waiting on a dead device.
type Monitor struct {
	name     string
	interval time.Duration
	probe    func(context.Context) error
	recover  func(context.Context) error
	now      func() time.Time

	state atomic.Pointer[Health]
	poke  chan struct{}
	stop  context.CancelFunc
	done  chan struct{}

	stuck atomic.Bool // a probe has not returned yet

	checking    sync.Mutex // one check at a time; guards the fields below
	fails       int
	backoff     time.Duration
	nextRecover time.Time
}

// NewMonitor returns a monitor of backend name that starts up (the
// backend's Open has just proved it works). recover may be nil. A zero
// interval means DefaultHealthInterval.
func NewMonitor(name string, interval time.Duration, probe, recover func(context.Context) error) *Monitor {
	if interval <= 0 {
		interval = DefaultHealthInterval
	}
	m := &Monitor{name: name, interval: interval, probe: probe, recover: recover, now: time.Now,
		poke: make(chan struct{}, 1), backoff: recoverBackoff}
	m.state.Store(&Health{Up: true, LastHealthy: m.now()})
	return m
}

// Start runs the probe loop until Stop.
func (m *Monitor) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	m.stop, m.done = cancel, make(chan struct{})
	go func() {
		defer close(m.done)
		m.run(ctx)
	}()
}

// Stop ends the probe loop and waits for it.
func (m *Monitor) Stop() {
	if m.stop != nil {
		m.stop()
		<-m.done
	}
}

func (m *Monitor) run(ctx context.Context) {
	t := time.NewTimer(m.wait())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.poke:
			t.Stop()
		}
		m.Check(ctx)
		select { // a burst of pokes costs one probe per gap
		case <-ctx.Done():
			return
		case <-time.After(minProbeGap):
		}
		t.Reset(m.wait())
	}
}

// wait is the time to the next scheduled probe: the interval ±20% while
// up, the next recovery attempt while down.
func (m *Monitor) wait() time.Duration {
	if !m.Health().Up && m.recover != nil {
		m.checking.Lock()
		d := m.nextRecover.Sub(m.now())
		m.checking.Unlock()
		return max(d, minProbeGap)
	}
	return m.interval*4/5 + rand.N(m.interval*2/5+1)
}

// Poke asks for a probe soon: a request saw an error that may mean the
// backend is gone.
func (m *Monitor) Poke() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// Health reports the last probe's finding.
func (m *Monitor) Health() Health { return *m.state.Load() }

// Err is nil while the backend is up, else Unavailable naming it.
func (m *Monitor) Err() error {
	h := m.state.Load()
	if h.Up {
		return nil
	}
	return errs.New(errs.Unavailable, "backend %s unavailable: %s", m.name, h.Detail)
}

// Check probes once and, when the backend is down and a recovery is due,
// tries one and probes again. It returns what it found.
func (m *Monitor) Check(ctx context.Context) Health {
	m.checking.Lock()
	defer m.checking.Unlock()
	err := m.probeOnce(ctx)
	if err == nil {
		m.healthy()
		return m.Health()
	}
	m.fails++
	if m.fails < failThreshold {
		return m.Health()
	}
	m.set(func(h *Health) { h.Up, h.Detail = false, err.Error() })
	if m.recover == nil || m.now().Before(m.nextRecover) {
		return m.Health()
	}
	m.nextRecover = m.now().Add(m.backoff)
	m.backoff = min(2*m.backoff, maxRecoverBackoff)
	m.set(func(h *Health) { h.Recoveries++ })
	if err := m.recover(ctx); err != nil {
		m.set(func(h *Health) { h.Detail = "recovery failed: " + err.Error() })
		return m.Health()
	}
	if err := m.probeOnce(ctx); err != nil {
		m.set(func(h *Health) { h.Detail = "after recovery: " + err.Error() })
		return m.Health()
	}
	m.healthy()
	return m.Health()
}

// probeOnce runs the probe in a goroutine of its own, bounded by
// probeTimeout even if the backend ignores its context (a call into a hung
// device): such a probe fails, and so does every probe while it is stuck.
func (m *Monitor) probeOnce(ctx context.Context) error {
	if m.stuck.Load() {
		return errs.New(errs.Unavailable, "an earlier probe is still inside the backend (it hangs)")
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	done := make(chan error, 1)
	m.stuck.Store(true)
	go func() {
		err := m.probe(ctx)
		m.stuck.Store(false)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return errs.New(errs.Unavailable, "the probe did not answer within %v (the backend hangs)", probeTimeout)
	}
}

// healthy records a probe that succeeded; checking is held.
func (m *Monitor) healthy() {
	m.fails, m.backoff, m.nextRecover = 0, recoverBackoff, time.Time{}
	now := m.now()
	m.set(func(h *Health) { h.Up, h.Detail, h.LastHealthy = true, "", now })
}

// set changes a copy of the state and publishes it; checking is held.
func (m *Monitor) set(fn func(*Health)) {
	h := *m.state.Load()
	fn(&h)
	m.state.Store(&h)
}
