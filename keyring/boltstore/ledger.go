package boltstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

var spendBucket = []byte("spend")

var _ keyring.Ledger = (*Store)(nil)

// spend is one reservation against a key's daily limit.
type spend struct {
	ID     string      `json:"id"`
	At     time.Time   `json:"at"`
	Amount keyring.Wei `json:"amount"`
}

// Reserve records amount for key id if the key's spending in the window
// stays within limit. The check and the write are one bbolt transaction,
// which bbolt runs one at a time, so concurrent reservations serialise.
func (s *Store) Reserve(ctx context.Context, id string, amount, limit *big.Int, now time.Time, window time.Duration) (string, error) {
	if err := errs.FromContext(ctx, "reserving spend"); err != nil {
		return "", err
	}
	rid := make([]byte, 8)
	rand.Read(rid)
	res := hex.EncodeToString(rid)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(spendBucket)
		if err != nil {
			return err
		}
		spends, err := loadSpends(b, id)
		if err != nil {
			return err
		}
		spends = slices.DeleteFunc(spends, func(sp spend) bool { return !sp.At.After(now.Add(-window)) })
		used := new(big.Int)
		for _, sp := range spends {
			used.Add(used, &sp.Amount.Int)
		}
		if next := new(big.Int).Add(used, amount); next.Cmp(limit) > 0 {
			return errs.New(errs.PermissionDenied, "daily limit: %s wei spent in the last 24h, %s more would pass the limit of %s", used, amount, limit)
		}
		var w keyring.Wei
		w.Set(amount)
		return saveSpends(b, id, append(spends, spend{ID: res, At: now, Amount: w}))
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
		return saveSpends(b, id, slices.DeleteFunc(spends, func(sp spend) bool { return sp.ID == res }))
	})
}

func loadSpends(b *bolt.Bucket, id string) ([]spend, error) {
	var out []spend
	if v := b.Get([]byte(id)); v != nil {
		if err := json.Unmarshal(v, &out); err != nil {
			return nil, errs.New(errs.Internal, "corrupt spend record of %q: %w", id, err)
		}
	}
	return out, nil
}

func saveSpends(b *bolt.Bucket, id string, spends []spend) error {
	v, err := json.Marshal(spends)
	if err != nil {
		return err
	}
	return b.Put([]byte(id), v)
}
