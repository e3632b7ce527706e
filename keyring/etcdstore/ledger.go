package etcdstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

type spend struct {
	ID     string      `json:"id"`
	At     time.Time   `json:"at"`
	Amount keyring.Wei `json:"amount"`
}

// Reserve records amount against key id's window if it stays within
// limit. Read, check and write are one compare-and-swap on the spend
// record; a lost race is retried, so replicas cannot overspend together.
func (s *Store) Reserve(ctx context.Context, id string, amount, limit *big.Int, now time.Time, window time.Duration) (string, error) {
	b := make([]byte, 8)
	rand.Read(b)
	res := hex.EncodeToString(b)
	err := s.updateSpends(ctx, id, func(spends []spend) ([]spend, error) {
		spends = slices.DeleteFunc(spends, func(sp spend) bool { return !sp.At.After(now.Add(-window)) })
		used := new(big.Int)
		for _, sp := range spends {
			used.Add(used, &sp.Amount.Int)
		}
		if new(big.Int).Add(used, amount).Cmp(limit) > 0 {
			return nil, errs.New(errs.PermissionDenied, "daily limit: %s wei spent in the last 24h, %s more would pass the limit of %s", used, amount, limit)
		}
		var w keyring.Wei
		w.Set(amount)
		return append(spends, spend{ID: res, At: now, Amount: w}), nil
	})
	return res, err
}

// Release removes reservation res of key id.
func (s *Store) Release(ctx context.Context, id, res string) error {
	return s.updateSpends(ctx, id, func(spends []spend) ([]spend, error) {
		return slices.DeleteFunc(spends, func(sp spend) bool { return sp.ID == res }), nil
	})
}

// updateSpends applies fn to key id's spend record with a compare-and-swap,
// retrying while other replicas win the race.
func (s *Store) updateSpends(ctx context.Context, id string, fn func([]spend) ([]spend, error)) error {
	path := s.prefix + "spend/" + id
	for {
		resp, err := s.cli.Get(ctx, path)
		if err != nil {
			return classify(ctx, err)
		}
		var spends []spend
		cmp := clientv3.Compare(clientv3.CreateRevision(path), "=", 0)
		if len(resp.Kvs) > 0 {
			if err := json.Unmarshal(resp.Kvs[0].Value, &spends); err != nil {
				return errs.New(errs.Internal, "corrupt spend record of %q: %w", id, err)
			}
			cmp = clientv3.Compare(clientv3.ModRevision(path), "=", resp.Kvs[0].ModRevision)
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
