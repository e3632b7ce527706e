package server

import (
	"strings"
	"sync"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// requestCodec is the proto codec, except for a sigil.v1 request that does
// not decode (bad wire format, a string that is not UTF-8): that request is
// handed on empty and its error noted, so that the access interceptor
// refuses it with InvalidArgument and audits it. gRPC itself answers a
// message that does not decode with Internal, before any interceptor runs:
// unaudited, and with the code of a server fault for a client's mistake.
type requestCodec struct {
	encoding.CodecV2
	malformed sync.Map // request message (pointer) → *decodeFailure
}

// decodeFailure is why a request did not decode, and its size.
type decodeFailure struct {
	size int
	err  error
}

var _ encoding.CodecV2 = (*requestCodec)(nil)

func newRequestCodec() *requestCodec {
	return &requestCodec{CodecV2: encoding.GetCodecV2(protocodec.Name)}
}

// Unmarshal decodes data into v; see requestCodec.
func (c *requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if m, ok := v.(proto.Message); ok && err != nil && isSigilMessage(m) {
		proto.Reset(m)
		c.malformed.Store(m, &decodeFailure{size: data.Len(), err: err})
		return nil
	}
	return err
}

// decodeError returns (and forgets) the decode error of request req and
// the request's size; nil if it decoded.
func (c *requestCodec) decodeError(req any) (error, int) {
	if f, ok := c.malformed.LoadAndDelete(req); ok {
		d := f.(*decodeFailure)
		return errs.New(errs.InvalidArgument, "malformed request: %v", d.err), d.size
	}
	return nil, 0
}

func isSigilMessage(m proto.Message) bool {
	return strings.HasPrefix(string(m.ProtoReflect().Descriptor().FullName()), sigilPackage+".")
}
