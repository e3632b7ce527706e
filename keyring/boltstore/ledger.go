package boltstore

import (
	"context"
	"encoding/json"
	"math/big"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

var spendBucket = []byte("spend")

var _ keyring.Ledger = (*Store)(nil)

// Reserve records amount for key id if the key's spending in the window
// stays within limit. The check and the write are one bbolt transaction,
// which bbolt runs one at a time, so concurrent reservations serialise.
func (s *Store) Reserve(ctx context.Context, id string, amount, limit *big.Int, now time.Time, window time.Duration) (string, error) {
	if err := errs.FromContext(ctx, "reserving spend"); err != nil {
		return "", err
	}
	res := keyring.NewReservationID()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(spendBucket)
		if err != nil {
			return err
		}
		spends, err := loadSpends(b, id)
		if err != nil {
			return err
		}
		if spends, err = keyring.Reserve(spends, res, amount, limit, now, window); err != nil {
			return err
		}
		return saveSpends(b, id, spends)
	})
	return res, err
}

// Release removes reservation res of key id.
func (s *Store) Release(ctx context.Context, id, res string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(spendBucket)
		if b == nil {
			return nil
		}
		spends, err := loadSpends(b, id)
		if err != nil {
			return err
		}
		return saveSpends(b, id, keyring.Release(spends, res))
	})
}

// Spent returns key id's spending in the window ending at now.
func (s *Store) Spent(ctx context.Context, id string, now time.Time, window time.Duration) (*big.Int, error) {
	var spends []keyring.Spend
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(spendBucket)
		if b == nil {
			return nil
		}
		var err error
		spends, err = loadSpends(b, id)
		return err
	})
	return keyring.Spent(spends, now, window), err
}

func loadSpends(b *bolt.Bucket, id string) ([]keyring.Spend, error) {
	var out []keyring.Spend
	if v := b.Get([]byte(id)); v != nil {
		if err := json.Unmarshal(v, &out); err != nil {
			return nil, errs.New(errs.Internal, "corrupt spend record of %q: %w", id, err)
		}
	}
	return out, nil
}

func saveSpends(b *bolt.Bucket, id string, spends []keyring.Spend) error {
	v, err := json.Marshal(spends)
	if err != nil {
		return err
	}
	return b.Put([]byte(id), v)
}
