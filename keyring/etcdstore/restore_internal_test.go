package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/keyring"
)

// killedKV stands for a restore killed at a chosen call: the calls from
// it on never reach etcd.
type killedKV struct {
	clientv3.KV
	dead bool
	kill func(op, key string) bool
}

var errKilled = errors.New("killed")

func (c *killedKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	if c.dead = c.dead || c.kill("delete", key); c.dead {
		return nil, errKilled
	}
	return c.KV.Delete(ctx, key, opts...)
}

func (c *killedKV) Txn(ctx context.Context) clientv3.Txn {
	if c.dead = c.dead || c.kill("txn", ""); c.dead {
		return deadTxn{}
	}
	return c.KV.Txn(ctx)
}

type deadTxn struct{}

func (deadTxn) If(...clientv3.Cmp) clientv3.Txn        { return deadTxn{} }
func (deadTxn) Then(...clientv3.Op) clientv3.Txn       { return deadTxn{} }
func (deadTxn) Else(...clientv3.Op) clientv3.Txn       { return deadTxn{} }
func (deadTxn) Commit() (*clientv3.TxnResponse, error) { return nil, errKilled }

func snapshotOf(n, size int) *keyring.Snapshot {
	s := &keyring.Snapshot{Revision: 7,
		Keys:    map[string][]byte{"treasury": []byte(`{"id":"treasury","purpose":"eth"}`)},
		Ledgers: map[string][]byte{"treasury": []byte(`{"fence":{"since":"2026-01-01T00:00:00Z","reason":"restored"}}`)},
		Anchors: map[string][]byte{}}
	for i := range n {
		s.Anchors[fmt.Sprintf("approval-payloads/%03d", i)] = []byte(strings.Repeat("p", size))
	}
	return s
}

// A restore --force killed at any step after it began changing the store
// (a folder's deletion, a batch) leaves the marker: the store is refused
// until a restore finishes (found by a review: the folders were deleted
// before the marker was written).
func TestRestoreKilledAtAnyStepLeavesTheMarker(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	s, err := Open(ctx, Config{Endpoints: c.Endpoints, Prefix: "/r/"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	real := s.cli.KV
	for step := 1; step <= 6; step++ { // 3 folders' deletions, then 3 batches
		if err := s.Restore(ctx, snapshotOf(250, 10), true); err != nil {
			t.Fatal(err)
		}
		calls := 0
		s.cli.KV = &killedKV{KV: real, kill: func(string, string) bool { calls++; return calls == step }}
		err := s.Restore(ctx, snapshotOf(250, 10), true)
		s.cli.KV = real
		if err == nil {
			t.Fatalf("step %d: the restore was not killed", step)
		}
		if err := s.CheckRestored(ctx); !errs.Is(err, errs.FailedPrecondition) {
			t.Fatalf("killed at step %d, the store is not refused: %v", step, err)
		}
	}
	if err := s.Restore(ctx, snapshotOf(250, 10), true); err != nil || s.CheckRestored(ctx) != nil {
		t.Fatalf("a restore --force that finishes: %v, %v", err, s.CheckRestored(ctx))
	}
}

// Batches are bounded by bytes too: a backup of large values (held
// requests' payloads reach 64 KiB) restores; a value no transaction can
// carry is refused before the store changes.
func TestRestoreBatchesByBytes(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	s, err := Open(ctx, Config{Endpoints: c.Endpoints, Prefix: "/big/"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Restore(ctx, snapshotOf(30, 60<<10), false); err != nil {
		t.Fatalf("30 values of 60 KiB: %v", err)
	}
	huge := snapshotOf(1, 2<<20)
	if err := s.Restore(ctx, huge, true); !errs.Is(err, errs.InvalidArgument) || s.CheckRestored(ctx) != nil {
		t.Fatalf("a 2 MiB value: %v; the store after: %v", err, s.CheckRestored(ctx))
	}
}
