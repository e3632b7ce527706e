package boltstore

import (
	"bytes"
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

var anchorBucket = []byte("anchors")

var _ keyring.Anchors = (*Store)(nil)

// PutAnchor stores value under name in one transaction.
func (s *Store) PutAnchor(ctx context.Context, name string, value []byte) error {
	if err := errs.FromContext(ctx, "storing an anchor"); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(anchorBucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), value)
	})
}

// CreateAnchor stores value under name if it is free, checked and
// written in one transaction.
func (s *Store) CreateAnchor(ctx context.Context, name string, value []byte) error {
	if err := errs.FromContext(ctx, "storing an anchor"); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(anchorBucket)
		if err != nil {
			return err
		}
		if b.Get([]byte(name)) != nil {
			return errs.New(errs.AlreadyExists, "anchor %q exists", name)
		}
		return b.Put([]byte(name), value)
	})
}

// GetAnchor returns the value under name.
func (s *Store) GetAnchor(ctx context.Context, name string) ([]byte, error) {
	if err := errs.FromContext(ctx, "reading an anchor"); err != nil {
		return nil, err
	}
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(anchorBucket); b != nil {
			out = append([]byte(nil), b.Get([]byte(name))...)
		}
		if len(out) == 0 {
			return errs.New(errs.NotFound, "no anchor %q", name)
		}
		return nil
	})
	return out, err
}

// ListAnchors returns every anchor whose name starts with prefix.
func (s *Store) ListAnchors(ctx context.Context, prefix string) (map[string][]byte, error) {
	if err := errs.FromContext(ctx, "reading anchors"); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(anchorBucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			out[string(k)] = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// UpdateAnchor rewrites the value under name in one transaction.
func (s *Store) UpdateAnchor(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) error {
	if err := errs.FromContext(ctx, "storing an anchor"); err != nil {
		return err
	}
	return s.rewrite(anchorBucket, name, func(old []byte) ([]byte, error) {
		if old != nil {
			old = append([]byte(nil), old...) // bbolt's bytes live only as long as the transaction
		}
		return fn(old)
	})
}
