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

// take spends one request of who's allowance for op under rule r, and
// says how long to wait when there is none left.
func (q *quotas) take(r *Rule, who identity.ID, op Op, now time.Time) (time.Duration, bool) {
	if r.limit == 0 {
		return 0, true
	}
	key := fmt.Sprintf("%p\x00%s\x00%s", r, who, op) // by rule: two rules may share an identity pattern
	q.mu.Lock()
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
	q.mu.Unlock()
	res := lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}
