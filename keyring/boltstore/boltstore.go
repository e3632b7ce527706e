// Package boltstore is the embedded keyring.Store: one bbolt file on local
// disk, for a single Sigil node. Revisions come from one bucket sequence,
// so they increase across all keys like etcd's, and every write is one
// bbolt transaction: a crash leaves either the old or the new record.
package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/groupcommit"
	"github.com/sigil-hsm/sigil/keyring"
)

var bucket = []byte("keys")

// Store is a keyring.Store in a bbolt file.
type Store struct {
	db    *bolt.DB
	group groupcommit.Group[*rewriteOp] // concurrent ledger and anchor rewrites
}

var _ keyring.Store = (*Store)(nil)

// Open opens (creating if needed) the store at path, with mode 0600.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, errs.New(errs.Unavailable, "opening keyring %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, errs.New(errs.Internal, "initialising keyring %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.db.Path() }

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Get returns the key id.
func (s *Store) Get(ctx context.Context, id string) (*keyring.Key, error) {
	var k *keyring.Key
	err := s.view(ctx, func(b *bolt.Bucket) error {
		v := b.Get([]byte(id))
		if v == nil {
			return errs.New(errs.NotFound, "key %q not found", id)
		}
		var err error
		k, err = decode(v)
		return err
	})
	return k, err
}

// List returns every key in ID order.
func (s *Store) List(ctx context.Context) ([]*keyring.Key, error) {
	var out []*keyring.Key
	err := s.view(ctx, func(b *bolt.Bucket) error {
		return b.ForEach(func(_, v []byte) error {
			k, err := decode(v)
			out = append(out, k)
			return err
		})
	})
	return out, err
}

// Put writes k if the stored revision is k.Revision.
func (s *Store) Put(ctx context.Context, k *keyring.Key) (int64, error) {
	var rev int64
	err := s.update(ctx, k.ID, k.Revision, func(b *bolt.Bucket) error {
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		rev = int64(seq)
		v, err := encode(k, rev)
		if err != nil {
			return err
		}
		return b.Put([]byte(k.ID), v)
	})
	return rev, err
}

// Delete removes key id if its stored revision is rev.
func (s *Store) Delete(ctx context.Context, id string, rev int64) error {
	return s.update(ctx, id, rev, func(b *bolt.Bucket) error { return b.Delete([]byte(id)) })
}

func (s *Store) view(ctx context.Context, fn func(*bolt.Bucket) error) error {
	if err := errs.FromContext(ctx, "reading the keyring"); err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucket)) })
}

// update runs fn in a write transaction after checking that id's stored
// revision is rev (zero: absent).
func (s *Store) update(ctx context.Context, id string, rev int64, fn func(*bolt.Bucket) error) error {
	if err := errs.FromContext(ctx, "writing the keyring"); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		var cur int64
		if v := b.Get([]byte(id)); v != nil {
			k, err := decode(v)
			if err != nil {
				return err
			}
			cur = k.Revision
		}
		switch {
		case cur == rev:
			return fn(b)
		case rev == 0:
			return errs.New(errs.AlreadyExists, "key %q already exists", id)
		case cur == 0:
			return errs.New(errs.NotFound, "key %q not found", id)
		}
		return errs.New(errs.Aborted, "key %q changed concurrently (revision %d, expected %d)", id, cur, rev)
	})
}

// A record is the key's revision, 8 bytes big-endian, then its JSON.
func encode(k *keyring.Key, rev int64) ([]byte, error) {
	body, err := json.Marshal(k)
	if err != nil {
		return nil, err
	}
	return append(binary.BigEndian.AppendUint64(nil, uint64(rev)), body...), nil
}

func decode(v []byte) (*keyring.Key, error) {
	if len(v) < 8 {
		return nil, errs.New(errs.Internal, "corrupt keyring record")
	}
	var k keyring.Key
	if err := json.Unmarshal(v[8:], &k); err != nil {
		return nil, errs.New(errs.Internal, "corrupt keyring record: %w", err)
	}
	k.Revision = int64(binary.BigEndian.Uint64(v[:8]))
	return &k, nil
}
