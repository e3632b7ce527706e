package server

import (
	"context"
	"net"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/purpose"
)

// method is one registered RPC: its service implementation and handler.
type method struct {
	srv  any
	desc grpc.MethodDesc
}

var _ purpose.Invoker = (*Server)(nil)

// Invoke runs req through method's whole path in process, as if it had
// come over gRPC on the connection ctx describes (see HTTPContext):
// metrics, errors, identity, authorization, request checks, the audit
// record, the default deadline and the handler. A purpose's second
// protocol (Ethereum JSON-RPC) is thereby held to every rule of the first.
func (s *Server) Invoke(ctx context.Context, fullMethod string, req, resp proto.Message) error {
	m, ok := s.methods[fullMethod]
	if !ok {
		return errs.New(errs.PermissionDenied, "permission denied")
	}
	dec := func(v any) error { proto.Merge(v.(proto.Message), req); return nil }
	out, err := m.desc.Handler(m.srv, ctx, dec, chainUnary(s.interceptors))
	if err != nil {
		return err
	}
	proto.Merge(resp, out.(proto.Message))
	return nil
}

// Allowed reports whether the caller ctx describes may do op on key id.
func (s *Server) Allowed(ctx context.Context, op authz.Op, id string) bool {
	if s.authenticate(ctx) != nil {
		return false
	}
	_, ok := s.authorize(identities(ctx), op, id)
	return ok
}

// HTTPContext describes an HTTP request's TLS connection as a gRPC peer,
// so Invoke and Allowed see the client certificate as the gRPC path does.
func (s *Server) HTTPContext(r *http.Request) context.Context {
	p := &peer.Peer{Addr: httpAddr(r.RemoteAddr)}
	if r.TLS != nil {
		p.AuthInfo = credentials.TLSInfo{State: *r.TLS}
	}
	return peer.NewContext(r.Context(), p)
}

type httpAddr string

func (a httpAddr) Network() string { return "tcp" }
func (a httpAddr) String() string  { return string(a) }

var _ net.Addr = httpAddr("")

// chainUnary runs interceptors in order, the first outermost, as
// grpc.ChainUnaryInterceptor does.
func chainUnary(interceptors []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		next := h
		for i := len(interceptors) - 1; i >= 0; i-- {
			ic, inner := interceptors[i], next
			next = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, inner) }
		}
		return next(ctx, req)
	}
}
