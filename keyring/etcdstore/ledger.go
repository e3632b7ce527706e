package etcdstore

import (
	"context"
	"encoding/json"
	"math/big"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

// Reserve records amount against key id's window if it stays within
// limit. Read, check and write are one compare-and-swap on the spend
// record; a lost race is retried, so replicas cannot overspend together.
func (s *Store) Reserve(ctx context.Context, id string, amount, limit *big.Int, now time.Time, window time.Duration) (string, error) {
	res := keyring.NewReservationID()
	err := s.updateSpends(ctx, id, func(spends []keyring.Spend) ([]keyring.Spend, error) {
		return keyring.Reserve(spends, res, amount, limit, now, window)
	})
	return res, err
}

// Release removes reservation res of key id.
func (s *Store) Release(ctx context.Context, id, res string) error {
	return s.updateSpends(ctx, id, func(spends []keyring.Spend) ([]keyring.Spend, error) {
		return keyring.Release(spends, res), nil
	})
}

// Spent returns key id's spending in the window ending at now.
func (s *Store) Spent(ctx context.Context, id string, now time.Time, window time.Duration) (*big.Int, error) {
	spends, _, err := s.loadSpends(ctx, id)
	return keyring.Spent(spends, now, window), err
}

// loadSpends reads key id's spend record and its mod revision (0: none).
func (s *Store) loadSpends(ctx context.Context, id string) ([]keyring.Spend, int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"spend/"+id)
	if err != nil {
		return nil, 0, classify(ctx, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	var spends []keyring.Spend
	if err := json.Unmarshal(resp.Kvs[0].Value, &spends); err != nil {
		return nil, 0, errs.New(errs.Internal, "corrupt spend record of %q: %w", id, err)
	}
	return spends, resp.Kvs[0].ModRevision, nil
}

// updateSpends applies fn to key id's spend record with a compare-and-swap,
// retrying while other replicas win the race.
func (s *Store) updateSpends(ctx context.Context, id string, fn func([]keyring.Spend) ([]keyring.Spend, error)) error {
	path := s.prefix + "spend/" + id
	for {
		spends, rev, err := s.loadSpends(ctx, id)
		if err != nil {
			return err
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(path), "=", 0)
		if rev != 0 {
			cmp = clientv3.Compare(clientv3.ModRevision(path), "=", rev)
		}
		next, err := fn(spends)
		if err != nil {
			return err
		}
		body, _ := json.Marshal(next)
		txn, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(path, string(body))).Commit()
		if err != nil {
			return classify(ctx, err)
		}
		if txn.Succeeded {
			return nil
		}
	}
}
