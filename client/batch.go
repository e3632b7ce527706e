package client

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

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

// MaxBatch is the most items one batch call takes, and maxBatchBytes
// the most request bytes (the server takes at most 256 KiB a message);
// SignBatch and MintJWTBatch split longer lists.
const (
	MaxBatch      = 1000
	maxBatchBytes = 240 << 10
)

// batches splits items into runs of at most MaxBatch items and
// maxBatchBytes of their encoding (an item larger alone is a run alone,
// which the server refuses).
func batches[T proto.Message](items []T) [][]T {
	var out [][]T
	start, size := 0, 0
	for i, it := range items {
		n := proto.Size(it) + 8 // the item's tag and length
		if i > start && (i-start == MaxBatch || size+n > maxBatchBytes) {
			out, start, size = append(out, items[start:i]), i, 0
		}
		size += n
	}
	if start < len(items) {
		out = append(out, items[start:])
	}
	return out
}

// SignBatch signs items with SignBatch calls of at most MaxBatch items
// (and 240 KiB):
// each item decided, signed and audited as a Sign of its own, concurrently
// on the server. An item's failure is its result's Err; the error returned
// is a call's (the transport, or the batch refused whole), after which
// the results of the items not signed are nil.
func (c *Client) SignBatch(ctx context.Context, items []BatchItem) ([]BatchResult, error) {
	reqs := make([]*sigilv1.SignRequest, len(items))
	for i, it := range items {
		reqs[i] = &sigilv1.SignRequest{KeyId: it.KeyID}
		if it.Message != nil {
			reqs[i].Input = &sigilv1.SignRequest_Message{Message: it.Message}
		} else {
			reqs[i].Input = &sigilv1.SignRequest_Digest{Digest: it.Digest}
		}
	}
	out := make([]BatchResult, 0, len(items))
	for _, chunk := range batches(reqs) {
		req := &sigilv1.SignBatchRequest{Items: chunk}
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
