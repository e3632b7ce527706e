package etcdstore

import (
	"context"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

var _ keyring.Anchors = (*Store)(nil)

func (s *Store) anchorPath(name string) string { return s.prefix + "anchors/" + name }

// PutAnchor stores value under name.
func (s *Store) PutAnchor(ctx context.Context, name string, value []byte) error {
	if _, err := s.cli.Put(ctx, s.anchorPath(name), string(value)); err != nil {
		return classify(ctx, err)
	}
	return nil
}

// CreateAnchor stores value under name if it is free: a transaction on
// the name's create revision, so of replicas racing one wins.
func (s *Store) CreateAnchor(ctx context.Context, name string, value []byte) error {
	path := s.anchorPath(name)
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(path), "=", 0)).Then(clientv3.OpPut(path, string(value))).Commit()
	if err != nil {
		return classify(ctx, err)
	}
	if !txn.Succeeded {
		return errs.New(errs.AlreadyExists, "anchor %q exists", name)
	}
	return nil
}

// GetAnchor returns the value under name.
func (s *Store) GetAnchor(ctx context.Context, name string) ([]byte, error) {
	resp, err := s.cli.Get(ctx, s.anchorPath(name))
	if err != nil {
		return nil, classify(ctx, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errs.New(errs.NotFound, "no anchor %q", name)
	}
	return resp.Kvs[0].Value, nil
}

// ListAnchors returns every anchor whose name starts with prefix.
func (s *Store) ListAnchors(ctx context.Context, prefix string) (map[string][]byte, error) {
	resp, err := s.cli.Get(ctx, s.anchorPath(prefix), clientv3.WithPrefix())
	if err != nil {
		return nil, classify(ctx, err)
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), s.anchorPath(""))] = kv.Value
	}
	return out, nil
}

// UpdateAnchor rewrites the value under name with a compare-and-swap.
func (s *Store) UpdateAnchor(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) error {
	return s.rewrite(ctx, s.anchorPath(name), fn)
}
