package etcdstore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/sigil-hsm/sigil/keyring"
)

// LeaseTTL is how long a scheduler leader outlives losing touch with etcd.
const LeaseTTL = 5 // seconds

// RunScheduler runs kr's rotation scheduler on exactly one replica at a
// time: it campaigns for leadership of the prefix's election, ticks while
// it leads, and campaigns again when its lease is lost. Every write it
// makes while leading is fenced on its election key, so once the lease
// lapses (and another replica may lead) its writes fail instead of racing.
// name identifies this replica in the election (LeaderName reports it).
func (s *Store) RunScheduler(ctx context.Context, kr *keyring.Keyring, interval time.Duration, name string, log *slog.Logger) {
	for ctx.Err() == nil {
		if err := s.lead(ctx, kr, interval, name, log); err != nil && ctx.Err() == nil {
			log.Warn("scheduler election failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (s *Store) lead(ctx context.Context, kr *keyring.Keyring, interval time.Duration, host string, log *slog.Logger) error {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(LeaseTTL), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, s.prefix+"scheduler")
	if err := el.Campaign(ctx, host); err != nil {
		return err
	}
	log.Info("this replica runs the rotation scheduler", "replica", host, "lease", sess.Lease())
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done(): // the lease is gone: stop before another leader starts writing
		case <-lctx.Done():
		}
		cancel()
	}()
	kr.Run(WithFence(lctx, el.Key(), el.Rev()), interval)
	log.Info("this replica no longer runs the rotation scheduler")
	return nil
}

// LeaderName is the name of the replica that runs the scheduler now.
func (s *Store) LeaderName(ctx context.Context) (string, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"scheduler", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return "", classify(ctx, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// ReplicaName names this process for the scheduler election.
func ReplicaName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}
