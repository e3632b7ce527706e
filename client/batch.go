package client

import (
	"context"
	"fmt"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// BatchItem is one digest (or, for EdDSA, message) to sign with a key.
type BatchItem struct {
	KeyID   string
	Digest  []byte
	Message []byte // EdDSA only
}

// BatchResult is an item's signature, or the error a Sign of it alone
// would have got.
type BatchResult struct {
	Signature  []byte
	Generation int
	KID        string
	Err        error
}

// MaxBatch is the most items one SignBatch call takes; SignBatch splits
// longer lists.
const MaxBatch = 1000

// SignBatch signs items with SignBatch calls of at most MaxBatch items:
// each item decided, signed and audited as a Sign of its own, concurrently
// on the server. An item's failure is its result's Err; the error returned
// is a call's (the transport, or the batch refused whole), after which
// the results of the items not signed are nil.
func (c *Client) SignBatch(ctx context.Context, items []BatchItem) ([]BatchResult, error) {
	out := make([]BatchResult, 0, len(items))
	for start := 0; start < len(items); start += MaxBatch {
		chunk := items[start:min(start+MaxBatch, len(items))]
		req := &sigilv1.SignBatchRequest{Items: make([]*sigilv1.SignRequest, len(chunk))}
		for i, it := range chunk {
			r := &sigilv1.SignRequest{KeyId: it.KeyID}
			if it.Message != nil {
				r.Input = &sigilv1.SignRequest_Message{Message: it.Message}
			} else {
				r.Input = &sigilv1.SignRequest_Digest{Digest: it.Digest}
			}
			req.Items[i] = r
		}
		resp, err := c.Signing.SignBatch(ctx, req)
		if err != nil {
			return out, err
		}
		if len(resp.GetResults()) != len(chunk) {
			return out, fmt.Errorf("SignBatch answered %d results for %d items", len(resp.GetResults()), len(chunk))
		}
		for _, r := range resp.GetResults() {
			if e := r.GetError(); e != nil {
				out = append(out, BatchResult{Err: fmt.Errorf("%s: %s", e.GetCode(), e.GetMessage())})
				continue
			}
			s := r.GetResponse()
			out = append(out, BatchResult{Signature: s.GetSignature(), Generation: int(s.GetGeneration()), KID: s.GetKid()})
		}
	}
	return out, nil
}
