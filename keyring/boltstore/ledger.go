package boltstore

import (
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

var spendBucket = []byte("spend")

var _ keyring.Ledger = (*Store)(nil)

// UpdateLedger applies fn to key id's record in one bbolt transaction,
// which bbolt runs one at a time, so concurrent updates serialise.
func (s *Store) UpdateLedger(ctx context.Context, id string, fn func(*keyring.LedgerRecord) error) error {
	if err := errs.FromContext(ctx, "updating the ledger"); err != nil {
		return err
	}
	return s.rewrite(spendBucket, id, func(old []byte) ([]byte, error) {
		rec, err := decodeLedger(old, id)
		if err != nil {
			return nil, err
		}
		if err := fn(rec); err != nil {
			return nil, err
		}
		return keyring.EncodeLedger(rec)
	})
}

// ReadLedger returns key id's record.
func (s *Store) ReadLedger(ctx context.Context, id string) (*keyring.LedgerRecord, error) {
	if err := errs.FromContext(ctx, "reading the ledger"); err != nil {
		return nil, err
	}
	rec := &keyring.LedgerRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(spendBucket); b != nil {
			var err error
			rec, err = decodeLedger(b.Get([]byte(id)), id)
			return err
		}
		return nil
	})
	return rec, err
}

func decodeLedger(v []byte, id string) (*keyring.LedgerRecord, error) {
	rec, err := keyring.DecodeLedger(v)
	if err != nil {
		return nil, errs.New(errs.Internal, "corrupt ledger record of %q: %w", id, err)
	}
	return rec, nil
}
