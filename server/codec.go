package server

import (
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// gRPC decodes a request before any interceptor runs and answers one that
// does not decode (bad wire format, a string that is not UTF-8) with
// Internal: unaudited, and with the code of a server fault for a client's
// mistake. Sigil's services are registered through register instead,
// whose handlers decode the request themselves: one that does not decode
// reaches the interceptors empty, its failure carried in the request's
// context (never in state that outlives the request: gRPC may drop a call
// before any interceptor runs), and the access interceptor audits it and
// answers InvalidArgument.

// rawMessage receives a request's bytes undecoded, through rawCodec.
type rawMessage []byte

// rawCodec is gRPC's protobuf codec that can also hand over raw bytes.
type rawCodec struct{ encoding.CodecV2 }

var _ encoding.CodecV2 = rawCodec{}

func newRawCodec() rawCodec { return rawCodec{encoding.GetCodecV2(protocodec.Name)} }

// Unmarshal copies the bytes into a *rawMessage, and decodes anything else.
func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if raw, ok := v.(*rawMessage); ok {
		*raw = data.Materialize()
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

// decodeFailure is why a request did not decode, and its size.
type decodeFailure struct {
	size int
	err  error
}

type decodeKey struct{}

// decodeFailed returns why the request whose context is ctx did not
// decode; nil if it did.
func decodeFailed(ctx context.Context) *decodeFailure {
	if p, ok := ctx.Value(decodeKey{}).(**decodeFailure); ok {
		return *p
	}
	return nil
}

// Err is the answer to a request that did not decode.
func (f *decodeFailure) Err() error {
	return errs.New(errs.InvalidArgument, "malformed request: %v", f.err)
}

// register registers impl for desc, each method decoding its own request
// as described above.
func (s *Server) register(desc *grpc.ServiceDesc, impl any) {
	d := *desc
	d.Methods = slices.Clone(desc.Methods)
	for i := range d.Methods {
		handler := d.Methods[i].Handler
		d.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			var failed *decodeFailure
			return handler(srv, context.WithValue(ctx, decodeKey{}, &failed), func(v any) error {
				var raw rawMessage
				if err := dec(&raw); err != nil {
					return err // the transport's own refusals stay as they are
				}
				if err := proto.Unmarshal(raw, v.(proto.Message)); err != nil {
					failed = &decodeFailure{size: len(raw), err: err}
					proto.Reset(v.(proto.Message))
				}
				return nil
			}, in)
		}
	}
	s.grpc.RegisterService(&d, impl)
	for _, m := range desc.Methods {
		s.methods["/"+desc.ServiceName+"/"+m.MethodName] = method{srv: impl, desc: m}
	}
}
