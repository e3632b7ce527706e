package boltstore

import (
	"context"
	"encoding/binary"

	bolt "go.etcd.io/bbolt"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

var _ keyring.Snapshotter = (*Store)(nil)

// buckets maps each bucket to the snapshot's part of it.
func buckets(s *keyring.Snapshot) map[string]*map[string][]byte {
	return map[string]*map[string][]byte{string(bucket): &s.Keys, string(spendBucket): &s.Ledgers, string(anchorBucket): &s.Anchors}
}

// Snapshot reads every bucket in one read transaction.
func (s *Store) Snapshot(ctx context.Context) (*keyring.Snapshot, error) {
	if err := errs.FromContext(ctx, "reading the keyring"); err != nil {
		return nil, err
	}
	snap := &keyring.Snapshot{}
	err := s.db.View(func(tx *bolt.Tx) error {
		snap.Revision = int64(tx.ID())
		for name, part := range buckets(snap) {
			*part = map[string][]byte{}
			if b := tx.Bucket([]byte(name)); b != nil {
				keys := name == string(bucket)
				err := b.ForEach(func(k, v []byte) error {
					if keys { // a key record without this store's revision prefix: portable to etcd
						if len(v) < 8 {
							return errs.New(errs.Internal, "corrupt keyring record %q", k)
						}
						v = v[8:]
					}
					(*part)[string(k)] = append([]byte(nil), v...)
					return nil
				})
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "reading the keyring")
	}
	return snap, nil
}

// Restore writes snap in one write transaction: into empty buckets, or
// over what they hold if replace (they are emptied first).
func (s *Store) Restore(ctx context.Context, snap *keyring.Snapshot, replace bool) error {
	if err := errs.FromContext(ctx, "restoring the keyring"); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for name, part := range buckets(snap) {
			b := tx.Bucket([]byte(name))
			if b != nil && b.Stats().KeyN > 0 {
				if !replace {
					return errs.New(errs.FailedPrecondition, "the keyring is not empty (it holds %s): restore into an empty store, or --force to replace it", name)
				}
				if err := tx.DeleteBucket([]byte(name)); err != nil {
					return err
				}
				b = nil
			}
			if b == nil {
				var err error
				if b, err = tx.CreateBucket([]byte(name)); err != nil {
					return err
				}
			}
			for k, v := range *part {
				if name == string(bucket) {
					v = append(binary.BigEndian.AppendUint64(nil, 1), v...) // revision 1 in a new store
				}
				if err := b.Put([]byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
