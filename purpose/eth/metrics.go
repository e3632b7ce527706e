package eth

import (
	"context"
	"math/big"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose"
)

var _ purpose.Metrics = Purpose{}

// Collectors exports each eth key's spending in the daily window against
// its daily limit, read from the ledger at each scrape (so every replica
// reports the same).
func (Purpose) Collectors(d purpose.Deps) []prometheus.Collector {
	return []prometheus.Collector{&spendCollector{d: d}}
}

var (
	spentDesc = prometheus.NewDesc("sigil_eth_daily_spent_wei", "Value an eth key signed for in the last 24 hours (its daily window), in wei.", []string{"namespace", "key"}, nil)
	limitDesc = prometheus.NewDesc("sigil_eth_daily_limit_wei", "An eth key's daily limit, in wei.", []string{"namespace", "key"}, nil)
)

type spendCollector struct{ d purpose.Deps }

func (c *spendCollector) Describe(ch chan<- *prometheus.Desc) { ch <- spentDesc; ch <- limitDesc }

// Collect reports the keys with a daily limit; a ledger that cannot be
// read reports no spending for that key rather than a wrong one.
func (c *spendCollector) Collect(ch chan<- prometheus.Metric) {
	if c.d.Ledger == nil || c.d.Keys == nil {
		return
	}
	for _, k := range c.d.Keys.List(context.Background()) {
		limit := PolicyOf(k).DailyLimit
		if k.Purpose != Name || limit == nil || k.Deleted {
			continue
		}
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, weiFloat(&limit.Int), namespace.Of(k.ID), namespace.Local(k.ID))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second) // each key its own time
		rec, err := c.d.Ledger.ReadLedger(ctx, k.ID)
		cancel()
		if err == nil {
			ch <- prometheus.MustNewConstMetric(spentDesc, prometheus.GaugeValue, weiFloat(keyring.Spent(rec.Spends, c.d.Clock(), DailyWindow)), namespace.Of(k.ID), namespace.Local(k.ID))
		}
	}
}

func weiFloat(w *big.Int) float64 {
	f, _ := new(big.Float).SetInt(w).Float64()
	return f
}
