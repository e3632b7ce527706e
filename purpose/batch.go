package purpose

import (
	"context"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/errs"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// MaxBatch is the most items a batch call (SignBatch, SignJWTBatch) may
// hold.
const MaxBatch = 1000

// Batch runs items as calls of method through the batch layer (d.Each:
// each answered, charged and audited as a call of its own) and gives, in the items' order, each one's response or
// the error that call got, as a BatchError. It is what a purpose's batch
// RPC is made of; the error it returns refuses the batch whole.
func Batch[Req, Resp proto.Message](ctx context.Context, d Deps, method string, items []Req, newResp func() Resp) ([]Resp, []*sigilv1.BatchError, error) {
	if len(items) == 0 || len(items) > MaxBatch {
		return nil, nil, errs.New(errs.InvalidArgument, "items: 1 to %d, got %d", MaxBatch, len(items))
	}
	if d.Each == nil {
		return nil, nil, errs.New(errs.FailedPrecondition, "this server signs no batches")
	}
	reqs := make([]proto.Message, len(items))
	for i, it := range items {
		reqs[i] = it
	}
	resps, failed := d.Each(ctx, method, reqs, func() proto.Message { return newResp() })
	out, errors := make([]Resp, len(items)), make([]*sigilv1.BatchError, len(items))
	for i := range items {
		if failed[i] != nil {
			st := status.Convert(failed[i])
			errors[i] = &sigilv1.BatchError{Code: st.Code().String(), Message: st.Message()}
			continue
		}
		out[i] = resps[i].(Resp)
	}
	return out, errors, nil
}
