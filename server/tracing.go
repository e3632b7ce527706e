package server

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/tracing"
)

// traced is the first interceptor: every call, gRPC's and Invoke's, in
// a span that continues the caller's trace (its gRPC metadata, or the
// HTTP request an in-process Invoke serves), ended with the call's code.
func traced(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, span := tracing.Start(tracing.FromGRPC(withRequestID(ctx)), info.FullMethod, trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	resp, err := h(ctx, req)
	if span.IsRecording() { // attributes cost allocations: only for a span that keeps them
		code := status.Code(toStatus(err))
		span.SetAttributes(attribute.String("rpc.system", "grpc"), attribute.String("rpc.method", info.FullMethod), attribute.String("rpc.grpc.status_code", code.String()))
		if err != nil {
			span.SetStatus(otelcodes.Error, code.String()) // the code only: a message may quote the request
		}
	}
	return resp, err
}

// step runs fn in a child span named name: a stage of the access path.
func step[T any](ctx context.Context, name string, fn func(context.Context) (T, error)) (T, error) {
	ctx, span := tracing.Start(ctx, name)
	defer span.End()
	out, err := fn(ctx)
	if err != nil {
		span.SetStatus(otelcodes.Error, status.Code(toStatus(err)).String())
	}
	return out, err
}

// describe names a request's record on its span, and the trace on the
// record: the audit record, the logs and the trace share the request ID
// and the trace ID.
func describe(ctx context.Context, rec *audit.Record) {
	rec.TraceID = tracing.TraceID(ctx)
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.String("sigil.request_id", rec.RequestID), attribute.String("sigil.operation", rec.Operation),
		attribute.String("sigil.outcome", rec.Outcome))
	if rec.KeyID != "" {
		span.SetAttributes(attribute.String("sigil.key_id", rec.KeyID))
	}
	if rec.Generation > 0 {
		span.SetAttributes(attribute.Int("sigil.generation", rec.Generation))
	}
	if rec.ApprovalID != "" {
		span.SetAttributes(attribute.String("sigil.approval_id", rec.ApprovalID))
	}
}
