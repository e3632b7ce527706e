package server

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/internal/tracing"
	"github.com/sigil-hsm/sigil/signer"
)

// codeOf is the one mapping from error kinds to gRPC codes. It is total:
// a kind it does not name is Internal, never OK (status.Error(codes.OK, …)
// is nil, which would answer an error as a success).
func codeOf(k errs.Kind) codes.Code {
	switch k {
	case errs.InvalidArgument:
		return codes.InvalidArgument
	case errs.NotFound:
		return codes.NotFound
	case errs.AlreadyExists:
		return codes.AlreadyExists
	case errs.FailedPrecondition:
		return codes.FailedPrecondition
	case errs.PermissionDenied:
		return codes.PermissionDenied
	case errs.ResourceExhausted:
		return codes.ResourceExhausted
	case errs.Unavailable:
		return codes.Unavailable
	case errs.DeadlineExceeded:
		return codes.DeadlineExceeded
	case errs.Canceled:
		return codes.Canceled
	case errs.Aborted:
		return codes.Aborted
	case errs.Unauthenticated:
		return codes.Unauthenticated
	default:
		return codes.Internal
	}
}

// toStatus converts err to a gRPC status. Typed errors keep their message
// (written to be safe for clients); anything else becomes a bare Internal,
// so an unexpected error can never leak detail.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	k := errs.KindOf(err)
	var typed *errs.Error
	if !errors.As(err, &typed) && k == errs.Internal {
		return status.Error(codes.Internal, "internal error")
	}
	return status.Error(codeOf(k), err.Error())
}

// errorInterceptor maps errors to statuses, turns a panic into Internal
// instead of a crash, and logs what failed without payloads.
func errorInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return answered(ctx, log, info.FullMethod, func() (any, error) { return h(ctx, req) })
	}
}

// answered runs h as a call of method: a panic is answered Internal
// instead of crashing the server, and an error as the status it maps to,
// logged without payloads.
func answered(ctx context.Context, log *slog.Logger, method string, h func() (any, error)) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic in handler", "method", method, "panic", p, "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	resp, err = h()
	if err != nil {
		st := toStatus(err)
		level := slog.LevelInfo
		if status.Code(st) == codes.Internal || errors.Is(err, signer.ErrKeyMissing) {
			level = slog.LevelError // a bug, or a key object gone from its backend: alarms
		}
		log.Log(ctx, level, "request failed", "method", method, "request_id", requestIDOf(ctx), "trace_id", tracing.TraceID(ctx),
			"identities", identity.Brief(identities(ctx)), "code", status.Code(st).String(), "err", err)
		return nil, st
	}
	return resp, nil
}
