package server

import (
	"context"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/namespace"
)

// batchWorkers is how many items of a batch run at once: enough to keep
// a backend's session pool busy, few enough that one batch does not
// crowd out single calls.
const batchWorkers = 16

// each runs reqs as calls of method through the one access path (Invoke),
// each as if it came alone: its own authorization, quota, approval rules
// and audit record. It is the batch layer: a purpose's batch RPC maps its
// items to reqs and the answers back. The batch's edge placed the items
// in its namespace; each is taken out again, as the client named it, so
// its own call places it once. Every call has ended when each returns.
func (s *Server) each(ctx context.Context, method string, reqs []proto.Message, newResp func() proto.Message) ([]proto.Message, []error) {
	resps, errs := make([]proto.Message, len(reqs)), make([]error, len(reqs))
	ns := namespace.FromContext(ctx)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(batchWorkers, len(reqs)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(reqs); i = int(next.Add(1) - 1) {
				namespace.Unscope(reqs[i], ns)
				resps[i] = newResp()
				errs[i] = s.Invoke(ctx, method, reqs[i], resps[i])
			}
		})
	}
	wg.Wait()
	return resps, errs
}
