package boltstore

import (
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// group commits concurrent rewrites (ledger claims and settles, anchor
// updates) in one bbolt transaction, so one fsync serves every request
// that arrived while the last was being written. The first caller to
// find no transaction under way leads: it commits what is queued (its
// own rewrite and what arrived meanwhile), hands the next batch to the
// first caller still waiting, and returns. Every caller returns once
// the transaction holding its change is durable. Alone, a rewrite is one
// transaction as before; no caller waits for a timer.
type group struct {
	mu      sync.Mutex
	queue   []*rewriteOp
	leading bool
}

// rewriteOp is one queued rewrite and, once its batch is written, what
// became of it; done says true (finished) or false (lead the next batch).
type rewriteOp struct {
	bucket []byte
	name   string
	fn     func(old []byte) ([]byte, error)
	err    error
	done   chan bool
}

// rewrite replaces the value under name in bucket by what fn makes of it
// (nil: deletes it), in a transaction it may share with other rewrites.
// fn sees the value as the rewrites before it in the batch left it; an
// error from fn changes nothing and is returned.
func (s *Store) rewrite(bucket []byte, name string, fn func(old []byte) ([]byte, error)) error {
	op := &rewriteOp{bucket: bucket, name: name, fn: fn, done: make(chan bool, 1)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, op)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if !lead && <-op.done {
		return op.err
	}
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	g.mu.Unlock()
	s.commit(batch)
	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].done <- false // the next batch is its to lead
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	for _, o := range batch {
		if o != op {
			o.done <- true
		}
	}
	return op.err
}

// commit writes batch in one transaction, each rewrite's error in its
// op. If the transaction fails as a whole (a write the store refuses,
// the disk), each rewrite is tried again in a transaction of its own, so
// one that cannot be written fails alone (its fn runs again: fns may).
func (s *Store) commit(batch []*rewriteOp) {
	err := s.write(batch)
	if err != nil && len(batch) > 1 {
		for _, op := range batch {
			op.err = nil
			s.commit([]*rewriteOp{op})
		}
		return
	}
	if err != nil && batch[0].err == nil {
		batch[0].err = err
	}
}

// write is batch's one transaction; a panic in it (in bbolt) fails it,
// and never leaves the callers waiting on its leader.
func (s *Store) write(batch []*rewriteOp) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errs.New(errs.Internal, "the keyring store's transaction panicked: %v", p)
		}
	}()
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, op := range batch {
			op.err = nil
			b, err := tx.CreateBucketIfNotExists(op.bucket)
			if err != nil {
				return err
			}
			v, ferr := apply(op, b.Get([]byte(op.name)))
			switch {
			case ferr != nil:
				op.err = ferr
			case v == nil:
				err = b.Delete([]byte(op.name))
			default:
				err = b.Put([]byte(op.name), v)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// apply runs op's fn; a panic in it fails that rewrite alone, not the
// batch (and not the callers waiting on its leader).
func apply(op *rewriteOp, old []byte) (v []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, errs.New(errs.Internal, "rewriting %q: panic: %v", op.name, p)
		}
	}()
	return op.fn(old)
}
