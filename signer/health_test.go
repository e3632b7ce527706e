package signer

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// A monitor goes down only after failThreshold failed probes, tries
// recoveries with a doubling, capped backoff, and is up again after the
// first probe that succeeds.
func TestMonitorThresholdBackoffAndRecovery(t *testing.T) {
	var broken atomic.Bool
	var recoveries int
	now := time.Unix(1000, 0)
	m := NewMonitor("hsm-x", time.Second, func(context.Context) error {
		if broken.Load() {
			return errs.New(errs.Unavailable, "token gone")
		}
		return nil
	}, func(context.Context) error { recoveries++; return errors.New("still gone") })
	m.now = func() time.Time { return now }
	ctx := context.Background()
	if m.Err() != nil || !m.Health().Up {
		t.Fatal("a new monitor must start up")
	}
	broken.Store(true)
	if h := m.Check(ctx); !h.Up {
		t.Fatal("down after one failure")
	}
	h := m.Check(ctx)
	if h.Up || recoveries != 1 || h.Recoveries != 1 {
		t.Fatalf("after two failures: %+v, %d recoveries", h, recoveries)
	}
	if err := m.Err(); !errs.Is(err, errs.Unavailable) || err.Error() != "backend hsm-x unavailable: recovery failed: still gone" {
		t.Fatalf("Err while down: %v", err)
	}
	// Recoveries wait out the backoff: 1 s, 2 s, 4 s, 8 s, 8 s…
	var at []time.Duration
	start := now
	for range 300 {
		now = now.Add(100 * time.Millisecond)
		before := recoveries
		m.Check(ctx)
		if recoveries > before {
			at = append(at, now.Sub(start))
			start = now
		}
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	if len(at) < len(want) {
		t.Fatalf("recoveries after %v, want gaps %v", at, want)
	}
	for i, w := range want {
		if at[i] != w {
			t.Fatalf("recovery gaps %v, want %v", at, want)
		}
	}
	broken.Store(false)
	if h := m.Check(ctx); !h.Up || h.Detail != "" || !h.LastHealthy.Equal(now) || m.Err() != nil {
		t.Fatalf("after a good probe: %+v", h)
	}
	// The backoff starts over after a recovery.
	broken.Store(true)
	m.Check(ctx)
	before := recoveries
	m.Check(ctx)
	if recoveries != before+1 {
		t.Fatal("no immediate recovery attempt after the backend went down again")
	}
}

// Poke makes the running loop probe at once instead of at the interval.
func TestMonitorPokeProbesSoon(t *testing.T) {
	probed := make(chan struct{}, 10)
	m := NewMonitor("kms", time.Hour, func(context.Context) error { probed <- struct{}{}; return nil }, nil)
	m.Start()
	defer m.Stop()
	m.Poke()
	select {
	case <-probed:
	case <-time.After(2 * time.Second):
		t.Fatal("a poke did not cause a probe")
	}
}
