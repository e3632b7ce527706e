package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/metadata"

	"github.com/sigil-hsm/sigil/internal/tracing"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// The approver whose approval completes the quorum sends a sampled
// traceparent: the approved request runs inside that Approve call, so
// its run and backend call are in the approver's trace, and the run's
// audit record carries that trace ID.
func TestApprovedRunJoinsTheApproversTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	tracing.Use(tp)
	t.Cleanup(func() { tracing.Use(nil) })
	e := newDualEnv(t)
	_, err := e.signTx(1, "0x1bc16d674ec80000", "0x10")
	id := heldID(t, err)
	if _, err := e.approve(officerA, id); err != nil {
		t.Fatal(err)
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", fmt.Sprintf("00-%s-00f067aa0ba902b7-01", traceID))
	got, err := e.approvals(officerB).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.approvals(officerB).Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: got.GetApproval().GetPayloadSha256()})
	if err != nil || a.GetApproval().GetState() != "done" {
		t.Fatalf("quorum: %v %v", a, err)
	}
	var inTrace, orphan []string
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID().String() == traceID {
			inTrace = append(inTrace, s.Name())
		} else {
			orphan = append(orphan, fmt.Sprintf("%s(trace %s, parent valid %v)", s.Name(), s.SpanContext().TraceID(), s.Parent().IsValid()))
		}
	}
	t.Logf("in the approver's trace: %v; elsewhere: %v", inTrace, orphan)
	for _, want := range []string{"sigil.approval_run", "sigil.backend_sign"} {
		if !slices.Contains(inTrace, want) {
			t.Errorf("the approved run's %s is not in the approver's sampled trace", want)
		}
	}
	runs := 0
	for _, r := range auditRecords(t, e.AuditLog) {
		if r.ApprovalID == id && r.Method == sigilv1.EthereumService_SignTransaction_FullMethodName && r.Outcome == "allowed" {
			runs++
			if r.TraceID != traceID {
				t.Errorf("the run's audit record carries trace %q, not the approver's %s", r.TraceID, traceID)
			}
		}
	}
	if runs != 1 {
		t.Errorf("%d audit records of the run, want 1", runs)
	}
}
