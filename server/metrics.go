package server

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/signer"
)

// metrics holds Sigil's Prometheus collectors, in a registry of its own
// so tests and several servers in one process do not collide.
type metrics struct {
	reg      *prometheus.Registry
	ops      *prometheus.CounterVec
	opTime   *prometheus.HistogramVec
	requests *prometheus.CounterVec
	reqTime  *prometheus.HistogramVec
	// missing counts signatures refused because a key's object was not
	// in its backend although the keyring records it: an alarm.
	missing   *prometheus.CounterVec
	jwks      *prometheus.CounterVec // JWK Set requests by set and answer
	auditTime prometheus.Histogram   // time to write (and sync) an audit record
	denials   *prometheus.CounterVec // authorization refusals by operation
	throttled *prometheus.CounterVec // requests past a quota, by rule and operation
	approvals *prometheus.CounterVec // dual control's steps, by operation and step
	held      *prometheus.GaugeVec   // requests kept for dual control, by state, as the last sweep counted them
}

func newMetrics(backends map[string]signer.Backend) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_sign_operations_total", Help: "Signing operations by key, algorithm, backend and outcome (gRPC code).",
		}, []string{"namespace", "key", "algorithm", "backend", "outcome"}),
		opTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sigil_sign_duration_seconds", Help: "Time in the backend's Sign call.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}, []string{"algorithm", "backend"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_grpc_requests_total", Help: "gRPC requests by method and code.",
		}, []string{"method", "code"}),
		reqTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sigil_grpc_request_duration_seconds", Help: "gRPC request latency by method.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}, []string{"method"}),
		missing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_backend_key_missing_total", Help: "Signatures refused because the backend did not show a key object the keyring records (an outage, or a deletion behind Sigil's back).",
		}, []string{"backend"}),
		jwks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_jwks_requests_total", Help: "JWK Set requests by set (per-key for a key's own document) and answer: 200, or 304 for a client whose copy was current.",
		}, []string{"namespace", "set", "code"}),
		auditTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sigil_audit_write_duration_seconds", Help: "Time to write an audit record, its fsync included; every response waits for it.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 2, 16),
		}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_quota_throttled_total", Help: "Requests refused with ResourceExhausted because the identity's quota was spent, by the policy rule's identity pattern and the operation.",
		}, []string{"rule", "operation"}),
		approvals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_approval_steps_total", Help: "Steps of requests held for dual control, by operation and step: held, approved (a vote), denied, ran, failed (the run's error).",
		}, []string{"operation", "step"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sigil_approval_requests", Help: "Requests kept for dual control by state (pending: waiting for approvers), as this replica's last sweep counted them.",
		}, []string{"state"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_authz_denials_total", Help: "Requests the access checks refused, by the operation asked for (unnamed: a method with no operation).",
		}, []string{"operation"}),
	}
	v := Version()
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sigil_build_info", Help: "1, labelled with the version, commit and Go version of this binary.",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "go": v.Go}})
	build.Set(1)
	m.reg.MustRegister(build, m.ops, m.opTime, m.requests, m.reqTime, m.missing, m.jwks, m.auditTime, m.denials, m.throttled, m.approvals, m.held,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for name, b := range backends {
		m.missing.WithLabelValues(name) // present at 0: an alert on the series needs it before the first event
		if pr, ok := b.(signer.PoolReporter); ok {
			m.registerPool(name, pr)
		}
		if hr, ok := b.(signer.HealthReporter); ok {
			m.registerHealth(name, hr)
		}
	}
	return m
}

// registerAudit exposes the audit log's health: while it is down every
// response is withheld.
func (m *metrics) registerAudit(l *audit.Log) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_audit_up", Help: "1 while the audit log can be written, 0 while responses are withheld."},
			func() float64 {
				if up, _ := l.Health(); up {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_audit_write_errors_total", Help: "Failed audit writes and fsyncs."},
			func() float64 { return float64(l.WriteErrors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_audit_anchor_errors_total", Help: "Failed writes of the audit chain's head or checkpoint to the keyring store (a tail cut meanwhile would go unnoticed)."},
			func() float64 { return float64(l.AnchorErrors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_audit_tamper_detected_total", Help: "Tamper records written: the log did not reach, or disagreed with, its anchored checkpoint (an alarm)."},
			func() float64 { return float64(l.Tampers()) }),
	)
}

// observeJWKS counts a JWK Set request.
func (m *metrics) observeJWKS(set string, notModified bool) {
	if set == "" {
		set = "per-key"
	}
	code := "200"
	if notModified {
		code = "304"
	}
	m.jwks.WithLabelValues(namespace.Of(set), namespace.Local(set), code).Inc()
}

// registerKeys exposes each key's lifecycle: generations by state, when
// the next one activates and when a scheduled deletion falls due.
func (m *metrics) registerKeys(kr *keyring.Keyring) {
	m.reg.MustRegister(keyCollector{kr})
}

var (
	generationsDesc = prometheus.NewDesc("sigil_key_generations", "Generations of a key by state.", []string{"namespace", "key", "purpose", "state"}, nil)
	activationDesc  = prometheus.NewDesc("sigil_key_next_activation_timestamp_seconds", "When a key's pending generation begins to sign (Unix time).", []string{"namespace", "key"}, nil)
	deletionDesc    = prometheus.NewDesc("sigil_key_deletion_timestamp_seconds", "When a key's scheduled deletion destroys its objects (Unix time).", []string{"namespace", "key"}, nil)
)

type keyCollector struct{ kr *keyring.Keyring }

func (keyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- generationsDesc
	ch <- activationDesc
	ch <- deletionDesc
}

func (c keyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, k := range c.kr.List(context.Background()) {
		if k.Deleted {
			continue // its ID stays reserved; its series need not
		}
		counts := map[keyring.State]int{}
		var next time.Time
		for _, g := range k.Generations {
			counts[g.State]++
			if g.State == keyring.StatePending && (next.IsZero() || g.ActivateAt.Before(next)) {
				next = g.ActivateAt
			}
		}
		for _, state := range keyring.States {
			ch <- prometheus.MustNewConstMetric(generationsDesc, prometheus.GaugeValue, float64(counts[state]), namespace.Of(k.ID), namespace.Local(k.ID), k.Purpose, string(state))
		}
		if !next.IsZero() {
			ch <- prometheus.MustNewConstMetric(activationDesc, prometheus.GaugeValue, float64(next.Unix()), namespace.Of(k.ID), namespace.Local(k.ID))
		}
		if !k.DeleteAt.IsZero() && !k.Deleted {
			ch <- prometheus.MustNewConstMetric(deletionDesc, prometheus.GaugeValue, float64(k.DeleteAt.Unix()), namespace.Of(k.ID), namespace.Local(k.ID))
		}
	}
}

// registerRepairs exposes the keyring's self-repairs by kind: each is an
// event worth a look, and active_restored an alarm.
func (m *metrics) registerRepairs(kr *keyring.Keyring) {
	for _, kind := range keyring.RepairKinds {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_keyring_repairs_total",
			Help: "Repairs the keyring made by itself: unfinished creations rolled back, unrecorded backend objects destroyed, JWT keys given back an active generation.", ConstLabels: prometheus.Labels{"kind": string(kind)}},
			func() float64 { return float64(kr.Repairs(kind)) }))
	}
}

func (m *metrics) registerHealth(name string, hr signer.HealthReporter) {
	labels := prometheus.Labels{"backend": name}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_backend_up", Help: "1 while the backend's health probe succeeds, 0 while it is down.", ConstLabels: labels},
			func() float64 {
				if hr.Health().Up {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_backend_reinit_total", Help: "Recoveries tried (a PKCS#11 module re-initialised) after the backend went down.", ConstLabels: labels},
			func() float64 { return float64(hr.Health().Recoveries) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_backend_seconds_since_healthy", Help: "Seconds since the backend's health probe last succeeded.", ConstLabels: labels},
			func() float64 { return time.Since(hr.Health().LastHealthy).Seconds() }),
	)
}

func (m *metrics) registerStore(hr signer.HealthReporter) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_store_up", Help: "1 while the keyring store's health probe succeeds, 0 while it is down."},
			func() float64 {
				if hr.Health().Up {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_store_seconds_since_healthy", Help: "Seconds since the keyring store's health probe last succeeded."},
			func() float64 { return time.Since(hr.Health().LastHealthy).Seconds() }),
	)
}

func (m *metrics) registerPool(name string, pr signer.PoolReporter) {
	labels := prometheus.Labels{"backend": name}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_backend_sessions", Help: "Size of the backend's session pool.", ConstLabels: labels},
			func() float64 { return float64(pr.PoolStats().Size) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_backend_sessions_in_use", Help: "Sessions checked out now.", ConstLabels: labels},
			func() float64 { return float64(pr.PoolStats().InUse) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_backend_session_waits_total", Help: "Checkouts that found every session busy.", ConstLabels: labels},
			func() float64 { return float64(pr.PoolStats().Waits) }),
	)
}

// observeSign records one signature made or tried with sg.
func (m *metrics) observeSign(sg keyring.Signing, err error, took time.Duration) {
	k := sg.Key
	if errors.Is(err, signer.ErrKeyMissing) {
		m.missing.WithLabelValues(k.Backend).Inc()
	}
	m.ops.WithLabelValues(namespace.Of(k.ID), namespace.Local(k.ID), string(k.Algorithm), k.Backend, status.Code(toStatus(err)).String()).Inc()
	m.opTime.WithLabelValues(string(k.Algorithm), k.Backend).Observe(took.Seconds())
}

// interceptor counts and times every unary request. It runs outside the
// error interceptor, so it sees the final status.
func (m *metrics) interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.served(ctx, info.FullMethod, err, start)
	return resp, err
}

// served counts a call of method begun at start and answered err (a
// status), and its latency.
func (m *metrics) served(ctx context.Context, method string, err error, start time.Time) {
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	observe(ctx, m.reqTime.WithLabelValues(method), time.Since(start).Seconds())
}

// observe records a latency, with the trace of a sampled request as its
// exemplar: a slow bucket on a dashboard leads to a trace of it.
func observe(ctx context.Context, o prometheus.Observer, v float64) {
	sc := trace.SpanContextFromContext(ctx)
	if e, ok := o.(prometheus.ExemplarObserver); ok && sc.IsSampled() {
		e.ObserveWithExemplar(v, prometheus.Labels{"trace_id": sc.TraceID().String()})
		return
	}
	o.Observe(v)
}

// preset makes the series an alert or a dashboard reads exist at zero
// before their first event (a rate over an absent series is no alert):
// each method's requests and latency, each operation's denials and
// approval steps, each approval state.
func (m *metrics) preset(methods []string) {
	for _, method := range methods {
		m.requests.WithLabelValues(method, "OK")
		m.reqTime.WithLabelValues(method)
	}
	for _, op := range append(authz.Ops(), "unnamed") {
		m.denials.WithLabelValues(string(op))
		for _, step := range []string{"held", "approved", "denied", "ran", "failed"} {
			m.approvals.WithLabelValues(string(op), step)
		}
	}
	for _, st := range approval.States {
		m.held.WithLabelValues(string(st))
	}
}
