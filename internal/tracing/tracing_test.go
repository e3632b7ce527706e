package tracing_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sigil-hsm/sigil/internal/tracing"
)

// Start records a stage's span under a sampled request, and none while
// tracing is off or under a request the sampler left out; a background
// call outside any request is a root the sampler decides.
func TestStartSpansOnlyWhereTheyRecord(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	sampled := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	t.Cleanup(func() { tracing.Use(nil) })

	tracing.Use(nil)
	ctx, span := tracing.Start(context.Background(), "off")
	if tracing.Starts(ctx) || span.IsRecording() || trace.SpanContextFromContext(ctx).IsValid() {
		t.Fatal("tracing off started a span")
	}
	span.End()

	tracing.Use(sampled)
	root, rs := tracing.Start(context.Background(), "request")
	_, child := tracing.Start(root, "stage")
	child.End()
	rs.End()
	ended := rec.Ended()
	if len(ended) != 2 || ended[0].Name() != "stage" || ended[0].Parent().SpanID() != rs.SpanContext().SpanID() {
		t.Fatalf("a sampled request's stage: %d spans ended", len(ended))
	}

	never := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	tracing.Use(never)
	unsampled, us := tracing.Start(context.Background(), "request")
	if !us.SpanContext().IsValid() || us.IsRecording() {
		t.Fatal("the unsampled request should have a trace ID and record nothing")
	}
	if tracing.Starts(unsampled) {
		t.Fatal("Starts under an unsampled request")
	}
	sctx, stage := tracing.Start(unsampled, "stage")
	if sctx != unsampled || stage.IsRecording() {
		t.Fatal("a stage under an unsampled request started a span")
	}
	stage.End()
	us.End()
	if n := len(rec.Ended()); n != 2 {
		t.Fatalf("spans ended under the unsampled request: %d", n-2)
	}
}

// Tracing off costs a stage no allocation.
func TestStartOffAllocatesNothing(t *testing.T) {
	tracing.Use(nil)
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		_, span := tracing.Start(ctx, "stage")
		span.End()
	}); n != 0 {
		t.Fatalf("%v allocations per stage with tracing off", n)
	}
}

// A caller's sampled trace continues here; its unsampled one does not.
func TestStartFollowsTheCallersSampledFlag(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tracing.Use(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample()))))
	t.Cleanup(func() { tracing.Use(nil) })
	for _, flags := range []trace.TraceFlags{trace.FlagsSampled, 0} {
		remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: flags, Remote: true})
		ctx := trace.ContextWithRemoteSpanContext(context.Background(), remote)
		_, span := tracing.Start(ctx, "rpc")
		if span.IsRecording() != remote.IsSampled() || tracing.Starts(ctx) != remote.IsSampled() {
			t.Errorf("caller's flags %v: recording %v", flags, span.IsRecording())
		}
		span.End()
	}
	if n := len(rec.Ended()); n != 1 {
		t.Fatalf("%d spans recorded, want the sampled caller's one", n)
	}
}

// A sampler that does not follow the parent (OTEL_TRACES_SAMPLER=always_on,
// to debug) records under a caller whose trace is not sampled.
func TestStartHonoursASamplerThatIgnoresTheParent(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	rec := tracetest.NewSpanRecorder()
	tracing.Use(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample())))
	t.Cleanup(func() { tracing.Use(nil) })
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, Remote: true})
	_, span := tracing.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "rpc")
	span.End()
	if n := len(rec.Ended()); n != 1 {
		t.Fatalf("%d spans recorded under an unsampled caller with always_on, want 1", n)
	}
}

// A Provider's roots are sampled by Start at its ratio: at 0 a root gets
// a trace ID (for the records) and no span, nor do its stages; a
// caller's sampled trace is still continued; at 1 every root is a span.
func TestProviderSamplesRootsItself(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	t.Cleanup(func() { tracing.Use(nil) })

	tracing.Use(&tracing.Provider{TracerProvider: sdk, Ratio: 0})
	root, span := tracing.Start(context.Background(), "rpc")
	if span.IsRecording() || !trace.SpanContextFromContext(root).IsValid() || tracing.TraceID(root) == "" {
		t.Fatal("a root left out should carry a trace ID and record nothing")
	}
	if _, stage := tracing.Start(root, "stage"); stage.IsRecording() || tracing.Starts(root) {
		t.Fatal("a stage under a root left out started a span")
	}
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true})
	_, continued := tracing.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "rpc")
	if !continued.IsRecording() || continued.SpanContext().TraceID() != remote.TraceID() {
		t.Fatal("a caller's sampled trace was not continued")
	}
	continued.End()

	tracing.Use(&tracing.Provider{TracerProvider: sdk, Ratio: 1})
	_, all := tracing.Start(context.Background(), "rpc")
	all.End()
	if n := len(rec.Ended()); n != 2 || !all.SpanContext().IsSampled() {
		t.Fatalf("%d spans ended, want the continued one and the ratio-1 root", n)
	}
}
