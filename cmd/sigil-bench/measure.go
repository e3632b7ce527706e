package main

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// result is one side of one cell.
type result struct {
	opsPerSec float64
	p50, p99  time.Duration
}

// measure runs op from n goroutines for a short warm-up, then for dur,
// recording every operation's latency. Any error aborts the run: a
// benchmark that fails requests measures nothing.
func measure(ctx context.Context, op func(context.Context) error, n int, dur time.Duration) (result, error) {
	if _, err := runFor(ctx, op, n, dur/5); err != nil {
		return result{}, err
	}
	start := time.Now()
	lat, err := runFor(ctx, op, n, dur)
	if err != nil {
		return result{}, err
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	return result{
		opsPerSec: float64(len(lat)) / elapsed.Seconds(),
		p50:       lat[len(lat)/2],
		p99:       lat[len(lat)*99/100],
	}, nil
}

func runFor(ctx context.Context, op func(context.Context) error, n int, dur time.Duration) ([]time.Duration, error) {
	deadline := time.Now().Add(dur)
	var (
		mu       sync.Mutex
		all      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			var lat []time.Duration
			var err error
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err = op(ctx); err != nil {
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return all, firstErr
}

// median returns the result with the median throughput.
func median(rs []result) result {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b result) int { return cmp.Compare(a.opsPerSec, b.opsPerSec) })
	return rs[len(rs)/2]
}

// interleaved measures two single-caller operations call by call, base
// and subject taking turns (which goes first alternates), for a short
// warm-up and then dur. Where the time of a call is mostly a third
// party's that changes by the millisecond (a node taking a block in),
// back-to-back rounds of a second each hand that change to whichever
// side runs then; taking turns hands it to both. A side's ops/s is its
// calls over the time spent in them.
func interleaved(ctx context.Context, base, subject func(context.Context) error, dur time.Duration) (x, y result, err error) {
	if _, _, err = alternate(ctx, base, subject, dur/5); err != nil {
		return x, y, err
	}
	xl, yl, err := alternate(ctx, base, subject, dur)
	return summary(xl), summary(yl), err
}

// alternate runs base and subject in turns for dur and returns each
// one's latencies.
func alternate(ctx context.Context, base, subject func(context.Context) error, dur time.Duration) (xl, yl []time.Duration, err error) {
	lat, err := rotate(ctx, []func(context.Context) error{base, subject}, dur)
	if err != nil {
		return nil, nil, err
	}
	return lat[0], lat[1], nil
}

// rotate runs ops one after another, call by call, for dur, each round
// beginning with the next op, and returns each one's latencies: every op
// is measured in the same moments of a shared machine.
func rotate(ctx context.Context, ops []func(context.Context) error, dur time.Duration) ([][]time.Duration, error) {
	lat := make([][]time.Duration, len(ops))
	for i, deadline := 0, time.Now().Add(dur); time.Now().Before(deadline); i++ {
		for j := range ops {
			k := (i + j) % len(ops)
			t0 := time.Now()
			if err := ops[k](ctx); err != nil {
				return nil, err
			}
			lat[k] = append(lat[k], time.Since(t0))
		}
	}
	return lat, nil
}

// summary is a side's result from its latencies: ops/s over the time
// spent in its calls.
func summary(lat []time.Duration) result {
	var total time.Duration
	for _, l := range lat {
		total += l
	}
	slices.Sort(lat)
	return result{opsPerSec: float64(len(lat)) / total.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}
