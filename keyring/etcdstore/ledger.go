package etcdstore

import (
	"context"
	"encoding/json"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

var _ keyring.Ledger = (*Store)(nil)

// UpdateLedger applies fn to key id's record with a compare-and-swap,
// retrying while other replicas win the race, so replicas cannot
// overspend or claim one nonce together.
func (s *Store) UpdateLedger(ctx context.Context, id string, fn func(*keyring.LedgerRecord) error) error {
	path := s.prefix + "spend/" + id
	for {
		rec, rev, err := s.loadLedger(ctx, id)
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return err
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(path), "=", 0)
		if rev != 0 {
			cmp = clientv3.Compare(clientv3.ModRevision(path), "=", rev)
		}
		body, _ := json.Marshal(rec)
		txn, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(path, string(body))).Commit()
		if err != nil {
			return classify(ctx, err)
		}
		if txn.Succeeded {
			return nil
		}
	}
}

// ReadLedger returns key id's record.
func (s *Store) ReadLedger(ctx context.Context, id string) (*keyring.LedgerRecord, error) {
	rec, _, err := s.loadLedger(ctx, id)
	return rec, err
}

// loadLedger reads key id's record and its mod revision (0: none).
func (s *Store) loadLedger(ctx context.Context, id string) (*keyring.LedgerRecord, int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"spend/"+id)
	if err != nil {
		return nil, 0, classify(ctx, err)
	}
	if len(resp.Kvs) == 0 {
		return &keyring.LedgerRecord{}, 0, nil
	}
	rec, err := keyring.DecodeLedger(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, errs.New(errs.Internal, "corrupt ledger record of %q: %w", id, err)
	}
	return rec, resp.Kvs[0].ModRevision, nil
}
