// Package tracing is Sigil's OpenTelemetry tracing: its set-up from the
// configuration's tracing section and the standard OTEL_* variables, the
// tracer every layer starts its spans with, and the continuation of a
// caller's trace (W3C traceparent) from gRPC metadata and HTTP headers.
//
// Tracing wraps the one access path (server's interceptors, which every
// gRPC call and every in-process Invoke of the JSON-RPC endpoint and the
// console pass through) and the layers below it that take time: the
// keyring store, the backend call and its session wait, the audit append.
// Attributes name methods, keys, backends, generations, outcomes and
// request IDs; never a payload, digest, claim, message or PIN.
package tracing

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/metadata"
)

// Config is the configuration's tracing section.
type Config struct {
	Enabled bool
	// SampleRatio is the share of traces started here that are sampled;
	// a caller's sampled trace is always continued (parent-based).
	SampleRatio float64
}

// propagator reads and writes W3C traceparent/tracestate: set whether
// tracing exports or not, so a caller's trace ID reaches the audit
// record and the logs even when Sigil records no spans.
var propagator = propagation.TraceContext{}

func init() { otel.SetTextMapPropagator(propagator) }

// tracer is what spans are started with; nil while tracing is off.
var tracer atomic.Pointer[tracerOf]

// tracerOf is a provider's tracer, and whether its sampler follows the
// parent's decision (the default; OTEL_TRACES_SAMPLER may name one that
// does not, such as always_on to debug a caller whose traces are not
// sampled).
type tracerOf struct {
	trace.Tracer
	followsParent bool
	// rootRatio, if not negative, is the share of root spans (none above
	// them) this package samples itself, before the provider is asked:
	// see Provider.
	rootRatio float64
}

// Provider is a tracer provider whose root spans Start samples at Ratio
// itself, its own sampler sampling every root it is given (and a
// parent's decision otherwise): a root left out then costs a random
// trace ID in the context, where the SDK made a span, a context and two
// IDs under a lock for each (7 % of a signature's CPU at 16 callers).
type Provider struct {
	*sdktrace.TracerProvider
	Ratio float64
}

// Use starts spans with tp from now on; nil turns tracing off. It is
// also the process's global provider, for libraries that trace.
func Use(tp trace.TracerProvider) {
	if tp == nil {
		tracer.Store(nil)
		otel.SetTracerProvider(noop.NewTracerProvider())
		return
	}
	sampler := os.Getenv("OTEL_TRACES_SAMPLER")
	t := &tracerOf{Tracer: tp.Tracer("github.com/sigil-hsm/sigil"), followsParent: sampler == "" || strings.HasPrefix(sampler, "parentbased_"), rootRatio: -1}
	if p, ok := tp.(*Provider); ok {
		t.rootRatio = p.Ratio
	}
	tracer.Store(t)
	otel.SetTracerProvider(tp)
}

// Start starts a span named name under ctx's. Where Starts says it
// would not, it returns ctx and a span whose End does nothing.
func Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !Starts(ctx) {
		return ctx, noSpan
	}
	t := tracer.Load()
	if t.rootRatio >= 0 && !trace.SpanContextFromContext(ctx).IsValid() && rand.Float64() >= t.rootRatio {
		// A root left out: its trace ID still names the request in the
		// records and logs, and Starts starts nothing under it.
		return trace.ContextWithSpanContext(ctx, unsampled()), noSpan
	}
	return t.Start(ctx, name, opts...)
}

// unsampled is the span context of a trace not sampled, with random IDs.
func unsampled() trace.SpanContext {
	var tid trace.TraceID
	var sid trace.SpanID
	binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
	binary.BigEndian.PutUint64(tid[8:], rand.Uint64())
	binary.BigEndian.PutUint64(sid[:], rand.Uint64()|1) // never all zeros
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid})
}

// Starts reports whether Start would start a span under ctx: not while
// tracing is off, nor under a trace not sampled (a span here that does
// not record, or a caller's whose traceparent says not sampled) when
// sampling is parent-based, so that no span under it would be. The
// per-call cost of tracing off, or of the 99 % of requests 1 % sampling
// leaves out, is then a context lookup, not a span and a context for
// each stage; a caller whose span name or attributes cost allocations
// asks first.
func Starts(ctx context.Context) bool {
	t := tracer.Load()
	if t == nil {
		return false
	}
	parent := trace.SpanFromContext(ctx)
	sc := parent.SpanContext()
	return !t.followsParent || !sc.IsValid() || sc.IsSampled() || parent.IsRecording()
}

// noSpan is the span of no trace, whose methods do nothing.
var noSpan = trace.SpanFromContext(context.Background())

// Setup exports spans over OTLP/gRPC when c.Enabled (see NewProvider)
// and returns what flushes and stops the exporter.
func Setup(ctx context.Context, c Config, version string) (func(context.Context) error, error) {
	if !c.Enabled {
		return func(context.Context) error { return nil }, nil
	}
	tp, err := NewProvider(ctx, c, version)
	if err != nil {
		return nil, err
	}
	Use(tp)
	return tp.Shutdown, nil
}

// NewProvider is a provider that exports spans over OTLP/gRPC to where
// the standard variables say (OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS,
// _INSECURE, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME). Its roots are
// sampled at the section's ratio by Start (see Provider), a caller's
// trace as the caller sampled it; OTEL_TRACES_SAMPLER, if set, is the
// SDK's sampler instead.
func NewProvider(ctx context.Context, c Config, version string) (*Provider, error) {
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, err
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", serviceName()), attribute.String("service.version", version)))
	if err != nil {
		return nil, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	ratio := -1.0
	if os.Getenv("OTEL_TRACES_SAMPLER") == "" {
		opts, ratio = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample()))), c.SampleRatio
	}
	return &Provider{TracerProvider: sdktrace.NewTracerProvider(opts...), Ratio: ratio}, nil
}

func serviceName() string {
	if n := os.Getenv("OTEL_SERVICE_NAME"); n != "" {
		return n
	}
	return "sigil"
}

// FromGRPC continues the trace a gRPC caller's metadata names, unless
// ctx is in a trace already (an in-process Invoke from a traced HTTP
// request).
func FromGRPC(ctx context.Context) context.Context {
	if trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	return propagator.Extract(ctx, metadataCarrier(md))
}

// metadataCarrier reads gRPC metadata as a propagation carrier.
type metadataCarrier metadata.MD

func (m metadataCarrier) Get(key string) string {
	if v := metadata.MD(m).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (m metadataCarrier) Set(key, value string) { metadata.MD(m).Set(key, value) }
func (m metadataCarrier) Keys() []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// HTTP serves h in a span named name that continues the trace the
// request's traceparent header names.
func HTTP(name string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		if Starts(ctx) {
			var span trace.Span
			// The method only: a path may hold a token (an RPC URL's API key).
			ctx, span = Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.String("http.request.method", r.Method)))
			defer span.End()
		}
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// TraceID is the trace ctx is in, in hex; "" outside one.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}
