package etcdstore

import (
	"context"
	"errors"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// rewriteOp is one rewrite queued for a group commit (see groupcommit):
// concurrent rewrites (ledger claims and settles, anchor updates) share
// one etcd transaction, so one quorum write serves them all, and claims
// on one key's ledger no longer race each other's compare-and-swap.
type rewriteOp struct {
	ctx     context.Context
	path    string
	fn      func(old []byte) ([]byte, error)
	err     error
	applied bool // fn gave a value, which the transaction writes
}

// maxGroup bounds a group's transaction well inside etcd's limits (128
// operations, 1.5 MiB a request by default).
const maxGroup = 32

// rewrite replaces the value at path by what fn makes of it (nil:
// deletes it), in a transaction it may share with concurrent rewrites.
// fn sees the value as the rewrites before it in the batch left it; an
// error from fn changes nothing and is returned. The transaction
// compares the mod revision of every value it writes, and is made again
// from fresh reads while other replicas win the race.
func (s *Store) rewrite(ctx context.Context, path string, fn func(old []byte) ([]byte, error)) error {
	if ctx.Err() != nil {
		return errs.FromContext(ctx, "talking to etcd")
	}
	op := &rewriteOp{ctx: ctx, path: path, fn: fn}
	s.group.Do(op, s.commit)
	return op.err
}

// errConflict is a transaction another writer's change to one of its
// values refused.
var errConflict = errors.New("a value changed since it was read")

// commit makes batch's rewrites in one transaction, retried from fresh
// reads on a conflict; if etcd refuses it, each rewrite is tried alone. A
// rewrite whose caller gave up before it began is
// left out; the rest share a context that lasts while any of their
// callers waits, so one caller giving up fails no other's rewrite.
func (s *Store) commit(batch []*rewriteOp) {
	live := batch[:0:0]
	for _, op := range batch {
		if op.ctx.Err() != nil {
			op.err = errs.FromContext(op.ctx, "talking to etcd")
			continue
		}
		live = append(live, op)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := whileAnyWaits(live)
	defer cancel()
	err := errConflict
	for errors.Is(err, errConflict) {
		err = s.commitOnce(ctx, live)
	}
	var refusal refusedError
	switch {
	case err == nil:
	case len(live) > 1 && errors.As(err, &refusal):
		// One rewrite etcd refuses (a value past its request limit)
		// fails alone: each is tried in a transaction of its own. Only a
		// write refused unapplied is: one whose answer was lost may have
		// been applied, and its rewrites must not run twice.
		for _, op := range live {
			s.commit([]*rewriteOp{op})
		}
	default:
		if errors.As(err, &refusal) {
			err = refusal.error
		}
		for _, op := range live {
			switch {
			case op.err != nil && !op.applied: // refused by its own fn
			case op.ctx.Err() != nil:
				op.err = errs.FromContext(op.ctx, "talking to etcd")
			default:
				op.err = err
			}
		}
	}
}

// commitOnce reads each value batch rewrites in one transaction, applies
// the rewrites in order, and writes what changed in a second,
// conditional on no value having changed since the first.
func (s *Store) commitOnce(ctx context.Context, batch []*rewriteOp) error {
	for _, op := range batch {
		op.err, op.applied = nil, false
	}
	var paths []string
	at := map[string]int{}
	for _, op := range batch {
		if _, ok := at[op.path]; !ok {
			at[op.path] = len(paths)
			paths = append(paths, op.path)
		}
	}
	gets := make([]clientv3.Op, len(paths))
	for i, p := range paths {
		gets[i] = clientv3.OpGet(p)
	}
	read, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return classify(ctx, err)
	}
	type value struct {
		v       []byte
		cmp     clientv3.Cmp
		changed bool
	}
	vals := make([]value, len(paths))
	for i, r := range read.Responses {
		vals[i].cmp = clientv3.Compare(clientv3.CreateRevision(paths[i]), "=", 0)
		if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
			vals[i].v = kvs[0].Value
			vals[i].cmp = clientv3.Compare(clientv3.ModRevision(paths[i]), "=", kvs[0].ModRevision)
		}
	}
	for _, op := range batch {
		val := &vals[at[op.path]]
		v, err := apply(op, val.v)
		op.err, op.applied = err, err == nil
		if err == nil {
			val.v, val.changed = v, true
		}
	}
	var cmps []clientv3.Cmp
	var writes []clientv3.Op
	for i, val := range vals {
		switch {
		case !val.changed:
		case val.v == nil:
			cmps, writes = append(cmps, val.cmp), append(writes, clientv3.OpDelete(paths[i]))
		default:
			cmps, writes = append(cmps, val.cmp), append(writes, clientv3.OpPut(paths[i], string(val.v)))
		}
	}
	if len(writes) == 0 {
		return nil
	}
	txn, err := s.cli.Txn(ctx).If(cmps...).Then(writes...).Commit()
	if err != nil {
		if refused(err) {
			return refusedError{classify(ctx, err)}
		}
		return classify(ctx, err)
	}
	if !txn.Succeeded {
		return errConflict
	}
	return nil
}

// refused reports whether etcd, or the client before sending, refused a
// write as too large or of too many operations: it was not applied.
func refused(err error) bool {
	return errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrTooManyOps) ||
		status.Code(err) == codes.ResourceExhausted // the client's own limit on a message
}

// refusedError is a write refused unapplied (see refused).
type refusedError struct{ error }

func (e refusedError) Unwrap() error { return e.error }

// apply runs op's fn; a panic in it fails that rewrite alone, not the
// batch (and not the callers waiting on its leader).
func apply(op *rewriteOp, old []byte) (v []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, errs.New(errs.Internal, "rewriting %q: panic: %v", op.path, p)
		}
	}()
	return op.fn(old)
}

// whileAnyWaits is a context that ends once every op's has (its values
// are the first's).
func whileAnyWaits(ops []*rewriteOp) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ops[0].ctx))
	var left atomic.Int64
	left.Store(int64(len(ops)))
	stops := make([]func() bool, len(ops))
	for i, op := range ops {
		stops[i] = context.AfterFunc(op.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}
