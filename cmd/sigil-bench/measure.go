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
