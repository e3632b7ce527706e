package authz

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sigil-hsm/sigil/internal/identity"
)

// A rule may carry a quota: `rate: 50/s` (or /m, /h) and `burst: N` (the
// rate's whole-second amount, at least 1, if unset). Each identity the
// rule allows gets its own allowance per operation, so one compromised
// or runaway client cannot use up another's. With several replicas each
// enforces its share of the rate (`quota_share` in the policy file, 1 by
// default).

// parseRate reads "N/s", "N/m" or "N/h".
func parseRate(s string) (rate.Limit, error) {
	n, unit, ok := strings.Cut(s, "/")
	per := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	v, err := strconv.ParseFloat(n, 64)
	if !ok || per == 0 || err != nil || math.IsNaN(v) || !(v > 0 && v <= 1e6) || v/per.Seconds() < 1e-6 {
		return 0, fmt.Errorf("rate %q: want N/s, N/m or N/h with 0 < N ≤ 1000000 (and at least one an hour)", s)
	}
	return rate.Limit(v / per.Seconds()), nil
}

// quotas hold the allowances of one policy: by rule, identity and
// operation. They start full and are dropped with the policy on reload.
type quotas struct {
	share float64
	mu    sync.Mutex
	lims  map[string]*rate.Limiter
}

// take spends up to n requests of who's allowance for op under rule r:
// as many as it holds, each reservation one atomic step of the limiter,
// so concurrent takers never share a token. It says how many it spent
// and, for the rest, how long until the allowance holds one more.
func (q *quotas) take(r *Rule, who identity.ID, op Op, now time.Time, n int) (granted int, wait time.Duration) {
	if r.limit == 0 {
		return n, 0
	}
	lim := q.limiter(r, who, op)
	for k := min(n, int(lim.TokensAt(now))); k > 0; k = min(k-1, int(lim.TokensAt(now))) {
		res := lim.ReserveN(now, k)
		if res.OK() && res.DelayFrom(now) == 0 {
			granted = k
			break
		}
		res.CancelAt(now) // another taker came between: fewer are left
	}
	if granted == n {
		return n, 0
	}
	res := lim.ReserveN(now, 1)
	wait = res.DelayFrom(now)
	res.CancelAt(now)
	return granted, max(wait, time.Nanosecond)
}

// limiter is who's allowance for op under rule r, made full when first
// asked for.
func (q *quotas) limiter(r *Rule, who identity.ID, op Op) *rate.Limiter {
	key := fmt.Sprintf("%p\x00%s\x00%s", r, who, op) // by rule: two rules may share an identity pattern
	q.mu.Lock()
	defer q.mu.Unlock()
	lim, ok := q.lims[key]
	if !ok {
		burst := float64(r.Burst) // this replica's share of it, as of the rate
		if burst == 0 {
			burst = float64(r.limit)
		}
		burst = max(1, burst*q.share)
		lim = rate.NewLimiter(r.limit*rate.Limit(q.share), int(burst))
		q.lims[key] = lim
	}
	return lim
}
