package server

import (
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// gRPC decodes a request before any interceptor runs and answers one that
// does not decode (malformed protobuf, invalid UTF-8 in a string field)
// with Internal, unaudited. Sigil's services are registered through
// register instead, which decodes the request itself: a request that does
// not decode reaches the interceptors empty, with its failure in the
// context, and the access interceptor audits it and answers
// InvalidArgument.

// rawMessage receives a request's bytes undecoded, through rawCodec.
type rawMessage []byte

// rawCodec is gRPC's protobuf codec that can also hand over raw bytes.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if raw, ok := v.(*rawMessage); ok {
		*raw = data.Materialize()
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

func newRawCodec() rawCodec { return rawCodec{encoding.GetCodecV2("proto")} }

// decodeFailure is a request that did not decode.
type decodeFailure struct {
	size int
	err  error
}

type decodeKey struct{}

// decodeFailed returns the decoding failure of the request in ctx, if any.
func decodeFailed(ctx context.Context) *decodeFailure {
	if p, ok := ctx.Value(decodeKey{}).(**decodeFailure); ok {
		return *p
	}
	return nil
}

// register registers impl for desc, each method decoding its request as
// described above.
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
					return err // the transport's own errors stay as they are
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
}
