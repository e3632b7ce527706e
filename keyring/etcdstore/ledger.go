package etcdstore

import (
	"context"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

var _ keyring.Ledger = (*Store)(nil)

// UpdateLedger applies fn to key id's record with a compare-and-swap,
// retrying while other replicas win the race, so replicas cannot
// overspend or claim one nonce together.
func (s *Store) UpdateLedger(ctx context.Context, id string, fn func(*keyring.LedgerRecord) error) error {
	return s.rewrite(ctx, s.prefix+"spend/"+id, func(old []byte) ([]byte, error) {
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
	resp, err := s.cli.Get(ctx, s.prefix+"spend/"+id)
	if err != nil {
		return nil, classify(ctx, err)
	}
	var v []byte
	if len(resp.Kvs) > 0 {
		v = resp.Kvs[0].Value
	}
	return decodeLedger(v, id)
}

func decodeLedger(v []byte, id string) (*keyring.LedgerRecord, error) {
	rec, err := keyring.DecodeLedger(v)
	if err != nil {
		return nil, errs.New(errs.Internal, "corrupt ledger record of %q: %w", id, err)
	}
	return rec, nil
}
