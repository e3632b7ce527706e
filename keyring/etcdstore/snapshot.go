package etcdstore

import (
	"context"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/failpoint"
	"github.com/sigil-hsm/sigil/keyring"
)

var _ keyring.Snapshotter = (*Store)(nil)

// parts maps each folder under the prefix to the snapshot's part of it;
// the scheduler's election is not part of a backup.
func parts(s *keyring.Snapshot) map[string]*map[string][]byte {
	return map[string]*map[string][]byte{"keys/": &s.Keys, "spend/": &s.Ledgers, "anchors/": &s.Anchors}
}

// Snapshot reads the prefix in one Get: one revision.
func (s *Store) Snapshot(ctx context.Context) (*keyring.Snapshot, error) {
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, classify(ctx, err)
	}
	snap := &keyring.Snapshot{Revision: resp.Header.Revision}
	ps := parts(snap)
	for _, p := range ps {
		*p = map[string][]byte{}
	}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), s.prefix)
		for folder, p := range ps {
			if name, ok := strings.CutPrefix(rest, folder); ok {
				(*p)[name] = kv.Value
			}
		}
	}
	return snap, nil
}

// Bounds of one restore transaction: etcd's --max-txn-ops is 128 by
// default, and it refuses a request over 1.5 MiB (--max-request-bytes).
const (
	restoreBatch      = 100
	restoreBatchBytes = 1 << 20
)

// unfinished names the marker a restore writes before it changes
// anything and deletes in its last transaction: a restore cut short
// leaves it, and a store holding it is refused (CheckRestored) until a
// restore finishes.
const unfinished = "restore-unfinished"

// Restore writes snap under the prefix, in transactions of at most
// restoreBatch writes and restoreBatchBytes, after a marker that only
// its last transaction removes: restore with no server running against
// this cluster. The prefix must be empty (but for the scheduler's
// election) unless replace, which deletes it once the marker is down. A
// value no transaction can carry is refused before anything changes.
func (s *Store) Restore(ctx context.Context, snap *keyring.Snapshot, replace bool) error {
	marker := s.prefix + unfinished
	if err := s.CheckRestored(ctx); err != nil && !replace {
		return err
	}
	var full []string
	for folder, p := range parts(snap) {
		for name, v := range *p {
			if len(name)+len(v) > restoreBatchBytes {
				return errs.New(errs.InvalidArgument, "the backup's %s%s is %d bytes: more than one etcd transaction carries (%d)", folder, name, len(v), restoreBatchBytes)
			}
		}
		resp, err := s.cli.Get(ctx, s.prefix+folder, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return classify(ctx, err)
		}
		if resp.Count > 0 {
			full = append(full, folder)
		}
	}
	if len(full) > 0 && !replace {
		return errs.New(errs.FailedPrecondition, "the keyring is not empty (it holds %s): restore into an empty store, or --force to replace it", strings.TrimSuffix(full[0], "/"))
	}
	if _, err := s.cli.Put(ctx, marker, strconv.FormatInt(snap.Revision, 10)); err != nil {
		return classify(ctx, err)
	}
	failpoint.Hit("restore.after-marker") // the state of any restore cut short: the marker and part of the store
	for _, folder := range full {
		if _, err := s.cli.Delete(ctx, s.prefix+folder, clientv3.WithPrefix()); err != nil {
			return classify(ctx, err)
		}
	}
	var (
		ops   []clientv3.Op
		bytes int
	)
	flush := func(last bool) error {
		if last {
			ops = append(ops, clientv3.OpDelete(marker))
		}
		_, err := s.cli.Txn(ctx).Then(ops...).Commit()
		ops, bytes = ops[:0], 0
		if err != nil {
			return classify(ctx, err)
		}
		return nil
	}
	for folder, p := range parts(snap) {
		for name, v := range *p {
			if len(ops) == restoreBatch || bytes+len(name)+len(v) > restoreBatchBytes {
				if err := flush(false); err != nil {
					return err
				}
			}
			ops = append(ops, clientv3.OpPut(s.prefix+folder+name, string(v)))
			bytes += len(s.prefix) + len(folder) + len(name) + len(v)
		}
	}
	return flush(true)
}

// CheckRestored refuses a store a restore was cut short in: it holds
// part of a backup, and a server on it would sign with part of the
// state (a ledger without its fence, say).
func (s *Store) CheckRestored(ctx context.Context) error {
	resp, err := s.cli.Get(ctx, s.prefix+unfinished, clientv3.WithCountOnly())
	if err != nil {
		return classify(ctx, err)
	}
	if resp.Count > 0 {
		return errs.New(errs.FailedPrecondition, "a restore into this store (etcd prefix %s) did not finish: it holds part of a backup; restore again with --force", s.prefix)
	}
	return nil
}
