package boltstore

import (
	bolt "go.etcd.io/bbolt"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// rewriteOp is one rewrite queued for a group commit (see
// groupcommit): concurrent rewrites (ledger claims and settles, anchor
// updates) share one bbolt transaction, so one fsync serves them all.
type rewriteOp struct {
	bucket []byte
	name   string
	fn     func(old []byte) ([]byte, error)
	err    error
}

// rewrite replaces the value under name in bucket by what fn makes of it
// (nil: deletes it), in a transaction it may share with other rewrites.
// fn sees the value as the rewrites before it in the batch left it; an
// error from fn changes nothing and is returned.
func (s *Store) rewrite(bucket []byte, name string, fn func(old []byte) ([]byte, error)) error {
	op := &rewriteOp{bucket: bucket, name: name, fn: fn}
	s.group.Do(op, s.commit)
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
