package server

import (
	"context"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/internal/tracing"
	"github.com/sigil-hsm/sigil/keyring"
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

// Allowed answers nil if the caller ctx describes may do op on key id:
// its certificate is valid and trusted now (else Unauthenticated) and a
// rule allows it (else PermissionDenied).
func (s *Server) Allowed(ctx context.Context, op authz.Op, id string) error {
	if err := s.authenticate(ctx); err != nil {
		return err
	}
	if _, ok := s.authorize(identities(ctx), op, inContext(ctx, id)); !ok {
		return errDenied
	}
	return nil
}

// Charge authorizes op on key id ("" for a listing) for the caller ctx
// describes and spends one request of its quota, as a gRPC call of op
// would: for a purpose's call that no gRPC method stands for.
func (s *Server) Charge(ctx context.Context, op authz.Op, id string) error {
	if err := s.authenticate(ctx); err != nil {
		return err
	}
	if s.opts.Authz == nil {
		return nil
	}
	d := s.opts.Authz.Decide(identities(ctx), op, inContext(ctx, id), s.opts.Now())
	switch {
	case d.RetryAfter > 0:
		s.metrics.throttled.WithLabelValues(d.Rule, string(op)).Inc()
		return throttled(d.RetryAfter)
	case !d.OK:
		return errDenied
	}
	return nil
}

// Status is err as the gRPC status it is answered with: the server's one
// mapping, for a purpose's second protocol to translate.
func (s *Server) Status(err error) error { return toStatus(err) }

// Record writes the audit record of a call of a purpose's second
// protocol that no gRPC method stands for (an account listing, a request
// refused before any): operation, the key it named if any, and its
// outcome, and details (name, value pairs). If the record cannot be
// written, the caller must withhold its answer, and gets Unavailable.
func (s *Server) Record(ctx context.Context, operation, keyID string, err error, details ...string) error {
	start := time.Now()
	rec := &audit.Record{Time: start.UTC(), RequestID: requestIDOf(ctx), Operation: operation, Peer: peerAddr(ctx),
		Identities: identity.Brief(identities(ctx)), Namespace: recorded(namespace.FromContext(ctx)), Outcome: "allowed"}
	rec.TraceID = tracing.TraceID(ctx)
	for i := 0; i+1 < len(details); i += 2 {
		if rec.Details == nil {
			rec.Details = map[string]string{}
		}
		rec.Details[details[i]] = details[i+1]
	}
	if keyring.ValidateID(keyID) == nil {
		rec.KeyID = inContext(ctx, keyID)
	}
	switch {
	case errs.Is(err, errs.PermissionDenied) || errs.Is(err, errs.Unauthenticated):
		rec.Outcome = "denied"
	case err != nil:
		rec.Outcome = "failed"
	}
	return s.record(rec, err, start)
}

// HTTPContext describes an HTTP request's TLS connection as a gRPC peer,
// so Invoke and Allowed see the client certificate as the gRPC path does,
// and places it in a namespace: the one its Sigil-Namespace header
// names, else the one the access rules bind its identity to (see
// authz.Policy.Bound), else root, where such a caller is refused.
func (s *Server) HTTPContext(r *http.Request) context.Context {
	p := &peer.Peer{Addr: httpAddr(r.RemoteAddr)}
	if r.TLS != nil {
		p.AuthInfo = credentials.TLSInfo{State: *r.TLS}
	}
	ctx := peer.NewContext(r.Context(), p)
	ns := r.Header.Get(namespace.Header)
	if ns == "" && s.opts.Authz != nil {
		ns, _ = s.opts.Authz.Bound(identities(ctx))
	}
	if ns == "" {
		ns = namespace.Root
	}
	md := metadata.Pairs(namespace.Header, ns)
	if id := r.Header.Get("X-Request-Id"); id != "" {
		md.Set("x-request-id", id) // checked where the record is made
	}
	if namespace.Validate(ns) != nil {
		// A header that names no namespace is never recorded or decided
		// on: Invoke refuses it, and Allowed and Record see Invalid,
		// which no rule reaches and no key lives in.
		md.Set(namespace.Header, namespace.Invalid)
		return namespace.NewContext(metadata.NewIncomingContext(ctx, md), namespace.Invalid)
	}
	return namespace.NewContext(metadata.NewIncomingContext(ctx, md), ns)
}

// inContext is key id of the namespace of the call ctx belongs to, as a
// target of the policy; "" (a listing) is the namespace itself.
func inContext(ctx context.Context, id string) string {
	return namespace.Qualify(namespace.FromContext(ctx), id)
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

// As is the context of a call made in process by identity id from a
// client at remote (the console's signed-in user): Invoke then decides,
// quotas and audits it as that identity's, as if its certificate had
// named it. Only code in the server's process can make one.
//
// Its namespace is the one the identity's rules bind it to (as an HTTP
// call's without a Sigil-Namespace header), else root.
func (s *Server) As(ctx context.Context, id identity.ID, remote string) context.Context {
	ctx = context.WithValue(ctx, runAsKey{}, []identity.ID{id})
	if addr, err := net.ResolveTCPAddr("tcp", remote); err == nil {
		ctx = peer.NewContext(ctx, &peer.Peer{Addr: addr})
	}
	ns := namespace.Root
	if s.opts.Authz != nil {
		if bound, ok := s.opts.Authz.Bound([]identity.ID{id}); ok && bound != "" {
			ns = bound
		}
	}
	return namespace.NewContext(metadata.NewIncomingContext(ctx, metadata.Pairs(namespace.Header, ns)), ns)
}

// Named reports whether the policy names identity id literally (in a
// rule or as an approver, not through a pattern): the identities the
// console enrolls people as.
func (s *Server) Named(id string) bool {
	return s.opts.Authz == nil || s.opts.Authz.Names(id)
}
