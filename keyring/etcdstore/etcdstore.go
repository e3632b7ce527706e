// Package etcdstore is the keyring.Store for several Sigil replicas: keys
// live in etcd under a prefix, each write is a transaction that compares
// the key's mod revision (the same compare-and-swap contract as the bbolt
// store), and every replica watches the prefix to keep its in-memory
// keyring, and so its JWKS, the same as every other's.
//
// Writes can carry a fence (WithFence): the scheduler's writes also
// compare the creation revision of its election key, so a replica whose
// lease has lapsed cannot write, whatever its clock thinks. Spending for
// daily limits is counted in etcd by the same kind of transaction, so
// concurrent requests on different replicas cannot overspend.
package etcdstore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/groupcommit"
	"github.com/sigil-hsm/sigil/keyring"
)

// Config locates the etcd cluster.
type Config struct {
	Endpoints []string
	Prefix    string // "/sigil/" if empty
	TLS       *tls.Config
}

// Store is a keyring.Store in etcd.
type Store struct {
	cli    *clientv3.Client
	prefix string
	group  groupcommit.Group[*rewriteOp] // concurrent ledger and anchor rewrites
}

var (
	_ keyring.Store   = (*Store)(nil)
	_ keyring.Ledger  = (*Store)(nil)
	_ keyring.Watcher = (*Store)(nil)
)

// Open connects and checks that the cluster answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errs.New(errs.InvalidArgument, "store.endpoints: missing")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/sigil/"
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second, TLS: cfg.TLS, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(reconnect)}})
	if err != nil {
		return nil, errs.New(errs.Unavailable, "etcd at %v: %v", cfg.Endpoints, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a start-up probe
	defer cancel()
	if _, err := cli.Get(pctx, cfg.Prefix, clientv3.WithCountOnly()); err != nil {
		cli.Close()
		if terr := tlsProblem(ctx, cfg.Endpoints[0], cfg.TLS); terr != nil {
			err = fmt.Errorf("%w (TLS to %s: %w)", err, cfg.Endpoints[0], terr)
		}
		return nil, errs.New(errs.Unavailable, "etcd at %v does not answer: %w", cfg.Endpoints, err)
	}
	return &Store{cli: cli, prefix: cfg.Prefix, group: groupcommit.Group[*rewriteOp]{Max: maxGroup}}, nil
}

// reconnect is how the client redials a member that went away: gRPC's
// default backoff grows to two minutes, so a cluster back after a short
// outage would stay unreachable long after; capped at a second, Sigil sees
// it again within a second or two of its return.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: 2 * time.Second,
}

// tlsProblem says why a TLS connection to endpoint fails, if it does:
// the etcd client retries a refused handshake until its deadline and
// reports only the deadline. With TLS 1.3 the server refuses a client
// certificate after the handshake, so the first read tells.
func tlsProblem(ctx context.Context, endpoint string, cfg *tls.Config) error {
	u, err := url.Parse(endpoint)
	if cfg == nil || err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg.Clone()}
	d.Config.NextProtos = []string{"h2"}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return nil
}

// Client is the etcd client, for leader election.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is where Sigil's keys live.
func (s *Store) Prefix() string { return s.prefix }

// Close closes the client.
func (s *Store) Close() error { return s.cli.Close() }

func (s *Store) keyPath(id string) string { return s.prefix + "keys/" + id }

// classify turns an etcd client error into a kind.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return errs.FromContext(ctx, "talking to etcd")
	}
	return errs.New(errs.Unavailable, "etcd: %v", err)
}

func decode(kv []byte, modRev int64) (*keyring.Key, error) {
	var k keyring.Key
	if err := json.Unmarshal(kv, &k); err != nil {
		return nil, errs.New(errs.Internal, "corrupt keyring record: %w", err)
	}
	k.Revision = modRev
	return &k, nil
}

// Get returns key id with its mod revision.
func (s *Store) Get(ctx context.Context, id string) (*keyring.Key, error) {
	resp, err := s.cli.Get(ctx, s.keyPath(id))
	if err != nil {
		return nil, classify(ctx, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errs.New(errs.NotFound, "key %q not found", id)
	}
	return decode(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// List returns every key.
func (s *Store) List(ctx context.Context) ([]*keyring.Key, error) {
	keys, _, err := s.ListAt(ctx)
	return keys, err
}

// ListAt returns every key and the store revision they were read at.
func (s *Store) ListAt(ctx context.Context) ([]*keyring.Key, int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"keys/", clientv3.WithPrefix())
	if err != nil {
		return nil, 0, classify(ctx, err)
	}
	out := make([]*keyring.Key, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k, err := decode(kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, k)
	}
	return out, resp.Header.Revision, nil
}

// Put writes k if its stored mod revision is k.Revision (zero: absent).
func (s *Store) Put(ctx context.Context, k *keyring.Key) (int64, error) {
	body, err := json.Marshal(k)
	if err != nil {
		return 0, err
	}
	return s.cas(ctx, k.ID, k.Revision, clientv3.OpPut(s.keyPath(k.ID), string(body)))
}

// Delete removes key id if its stored mod revision is rev.
func (s *Store) Delete(ctx context.Context, id string, rev int64) error {
	_, err := s.cas(ctx, id, rev, clientv3.OpDelete(s.keyPath(id)))
	return err
}

// cas runs op if key id is at revision rev (and the fence in ctx holds).
func (s *Store) cas(ctx context.Context, id string, rev int64, op clientv3.Op) (int64, error) {
	path := s.keyPath(id)
	cmp := clientv3.Compare(clientv3.ModRevision(path), "=", rev)
	if rev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(path), "=", 0)
	}
	cmps, reads := []clientv3.Cmp{cmp}, []clientv3.Op{clientv3.OpGet(path)}
	f, fenced := ctx.Value(fenceKey{}).(fence)
	if fenced {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(f.key), "=", f.rev))
		reads = append(reads, clientv3.OpGet(f.key))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(op).Else(reads...).Commit()
	if err != nil {
		return 0, classify(ctx, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	cur := resp.Responses[0].GetResponseRange().Kvs
	switch {
	case fenced && (len(resp.Responses[1].GetResponseRange().Kvs) == 0 || resp.Responses[1].GetResponseRange().Kvs[0].CreateRevision != f.rev):
		return 0, errs.New(errs.Aborted, "this replica no longer holds the scheduler lease")
	case rev == 0:
		return 0, errs.New(errs.AlreadyExists, "key %q already exists", id)
	case len(cur) == 0:
		return 0, errs.New(errs.NotFound, "key %q not found", id)
	}
	return 0, errs.New(errs.Aborted, "key %q changed concurrently (revision %d, expected %d)", id, cur[0].ModRevision, rev)
}

type fenceKey struct{}

type fence struct {
	key string
	rev int64
}

// WithFence makes writes under ctx succeed only while key still has
// creation revision rev: an election key, which etcd deletes when its
// lease lapses.
func WithFence(ctx context.Context, key string, rev int64) context.Context {
	return context.WithValue(ctx, fenceKey{}, fence{key, rev})
}

// Watch reports every change under the prefix after revision from, until
// ctx ends or the watch breaks (compaction, lost cluster): then it
// returns, and the caller reloads.
func (s *Store) Watch(ctx context.Context, from int64, put func(*keyring.Key), del func(id string, rev int64)) error {
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.prefix+"keys/", clientv3.WithPrefix(), clientv3.WithRev(from+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return classify(ctx, err)
		}
		for _, ev := range wr.Events {
			id := strings.TrimPrefix(string(ev.Kv.Key), s.prefix+"keys/")
			if ev.Type == clientv3.EventTypeDelete {
				del(id, ev.Kv.ModRevision) // a delete's revision is its own
				continue
			}
			if k, err := decode(ev.Kv.Value, ev.Kv.ModRevision); err == nil {
				put(k)
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("etcd watch closed")
}
