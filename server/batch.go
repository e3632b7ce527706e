package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/internal/tracing"
)

// batchWorkers is how many items of all batches run at once: enough to
// keep a backend's session pool busy. More would only queue at the pool,
// crowding the scheduler with waiters (16 a batch at 16 callers cost
// SignBatch a sixth of its throughput in a quick run); single calls take
// no slot, so batches do not hold them up.
const batchWorkers = 16

// each runs reqs as calls of method and gives each one's response or
// error, every item decided, charged and audited as a call of its own.
// It is the batch layer: a purpose's batch RPC maps its items to reqs
// and the answers back. The items are as the client named them (the
// batch's edge does not place them in its namespace): the access path
// places each, so one that cannot be placed fails alone. Every call has
// ended when each returns.
//
// Well-formed items on one key that no approval rule may hold are a
// group: the access path decides it once (admit: the certificate, the
// policy, the namespace, and the quota, charged per item), then each item
// goes on as a single call would (hold, in case a rule came since, and
// the method's handler), and their records are written together before
// any is answered. Any other item is a call of its own through Invoke.
func (s *Server) each(ctx context.Context, method string, reqs []proto.Message, newResp func() proto.Message) ([]proto.Message, []error) {
	resps, failed := make([]proto.Message, len(reqs)), make([]error, len(reqs))
	var tasks []func()
	alone := func(i int) {
		tasks = append(tasks, func() { resps[i] = newResp(); failed[i] = s.Invoke(ctx, method, reqs[i], resps[i]) })
	}
	byKey, others := s.grouped(ctx, method, reqs)
	for _, i := range others {
		alone(i)
	}
	var groups []*group
	for _, idx := range byKey {
		g := s.admitGroup(ctx, method, reqs, idx, failed)
		groups = append(groups, g)
		for n, i := range idx[:g.granted] {
			if failed[i] == nil {
				tasks = append(tasks, func() { resps[i], failed[i] = s.runItem(ctx, method, g.recs[n], reqs[i]) })
			}
		}
	}
	s.inSlots(tasks)
	for _, g := range groups {
		s.finishGroup(ctx, method, g, reqs, resps, failed)
	}
	return resps, failed
}

// inSlots runs tasks, each in one of the server's batch slots, and returns
// when all have.
func (s *Server) inSlots(tasks []func()) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(batchWorkers, len(tasks)) {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(tasks)); i = next.Add(1) - 1 {
				s.batchSlots <- struct{}{}
				tasks[i]()
				<-s.batchSlots
			}
		})
	}
	wg.Wait()
}

// grouped sorts a batch's items: by key, those that may be decided
// together (two or more, well formed, on a key no approval rule may
// hold, of a method decided on its key), and the others.
func (s *Server) grouped(ctx context.Context, method string, reqs []proto.Message) (byKey [][]int, others []int) {
	op, named := s.routes.ops[method]
	if !named || selfAuthorized[method] || alwaysHeld[method] {
		for i := range reqs {
			others = append(others, i)
		}
		return nil, others
	}
	ns := namespace.FromContext(ctx)
	at := map[string]int{}
	for i, r := range reqs {
		id := keyIDOf(r)
		if id == "" || checkRequest(r, nil) != nil || s.mayHold(op, namespace.Qualify(ns, id)) {
			others = append(others, i)
			continue
		}
		g, ok := at[id]
		if !ok {
			g = len(byKey)
			at[id] = g
			byKey = append(byKey, nil)
		}
		byKey[g] = append(byKey[g], i)
	}
	groups := byKey[:0]
	for _, idx := range byKey {
		if len(idx) == 1 { // alone, it is a call like any other
			others = append(others, idx[0])
			continue
		}
		groups = append(groups, idx)
	}
	return groups, others
}

// mayHold reports whether an approval rule may hold op on target.
func (s *Server) mayHold(op authz.Op, target string) bool {
	return s.opts.Authz != nil && s.opts.Authz.MayHold(op, target)
}

// group is a batch's items on one key, decided together.
type group struct {
	idx     []int
	start   time.Time
	granted int   // how many of the items, the first, the decision let through
	refused error // the others' answer
	recs    []*audit.Record
}

// admitGroup decides the items idx of reqs together through the access
// path (admit), the quota charged per item, and begins each one's record
// from the decision's. It scopes the items it lets through to the
// namespace (an item that cannot be is failed).
func (s *Server) admitGroup(ctx context.Context, method string, reqs []proto.Message, idx []int, failed []error) *group {
	g := &group{idx: idx, start: time.Now()}
	op, named := s.routes.ops[method]
	first := reqs[idx[0]]
	rec := s.newRecord(ctx, g.start, method, first)
	outcome, err := step(ctx, "sigil.authorize", func(ctx context.Context) (string, error) {
		outcome, granted, err := s.admit(ctx, rec, first, method, op, named, len(idx))
		g.granted = granted
		return outcome, err
	})
	rec.Outcome, g.refused = outcome, err
	rec.TraceID = tracing.TraceID(ctx)
	g.recs = make([]*audit.Record, len(idx))
	for n, i := range idx {
		r := *rec
		r.PayloadSHA256 = ""
		s.notePayload(&r, method, reqs[i])
		if n >= g.granted && outcome == "allowed" {
			r.Outcome = "throttled"
		}
		if n > 0 && n < g.granted {
			if err := namespace.Scope(reqs[i], rec.Namespace); err != nil { // as the first's, which admit scoped
				r.Outcome, failed[i] = "failed", toStatus(err)
			}
		}
		g.recs[n] = &r
	}
	return g
}

// runItem runs one item of a group, decided, as access runs a single
// call once admitted: hold (an approval rule loaded since the items were
// grouped holds each, as it would a call of its own, charged once), then
// the method's handler. Its record is rec, which learns the generation
// that served it, whether it was held, or whether it failed.
func (s *Server) runItem(ctx context.Context, method string, rec *audit.Record, req proto.Message) (proto.Message, error) {
	m := s.methods[method]
	resp, err := answered(ctx, s.log, method, func() (any, error) {
		ctx, err := s.hold(ctx, rec, method, s.routes.ops[method], req)
		if err != nil {
			return nil, err
		}
		return m.desc.Handler(m.srv, context.WithValue(ctx, recordKey{}, rec), func(v any) error { proto.Merge(v.(proto.Message), req); return nil }, nil)
	})
	if err != nil {
		if rec.Outcome != "held" {
			rec.Outcome = "failed"
		}
		return nil, err
	}
	return resp.(proto.Message), nil
}

// finishGroup writes the records of a group's items together and answers
// each: its response, or its error, unless the records could not be
// written, when every item is refused (nothing is signed off the record).
func (s *Server) finishGroup(ctx context.Context, method string, g *group, reqs, resps []proto.Message, failed []error) {
	answers := make([]error, len(g.idx))
	for n, i := range g.idx {
		if n >= g.granted {
			failed[i] = toStatus(g.refused)
		}
		answers[n] = failed[i]
	}
	written := s.recordAll(g.recs, answers, g.start)
	ns := g.recs[0].Namespace
	for n, i := range g.idx {
		if written != nil {
			resps[i], failed[i] = nil, toStatus(written)
		} else if failed[i] == nil {
			s.committed(ctx, g.recs[n], method, reqs[i], resps[i])
		}
		namespace.Unscope(resps[i], ns)
		failed[i] = unscopeError(failed[i], ns)
		s.metrics.served(ctx, method, failed[i], g.start)
	}
}
