package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/etcdstore"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/signer"
)

// etcdReplica runs a server whose keyring and ledgers are in the etcd
// cluster at endpoints: its own etcd client, an in-memory keyring that
// follows the cluster, and a gRPC server over the bench's token. stop
// ends all three.
func (b *bench) etcdReplica(ctx context.Context, endpoints []string) (conn *grpc.ClientConn, kr *keyring.Keyring, stop func(), err error) {
	s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: endpoints})
	if err != nil {
		return nil, nil, nil, err
	}
	kr, err = keyring.New(ctx, keyring.Options{Store: s, Backends: b.backends, DefaultBackend: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		s.Close()
		return nil, nil, nil, err
	}
	fctx, cancel := context.WithCancel(ctx)
	go kr.Follow(fctx, s)
	conn, _, stopServer, err := b.startServer(kr, server.Options{Ledger: s, Anchors: s}, insecure.NewCredentials(), nil)
	if err != nil {
		cancel()
		s.Close()
		return nil, nil, nil, err
	}
	return conn, kr, func() { stopServer(); cancel(); s.Close() }, nil
}

// ethEtcdTable: SignTransaction against ES256K Sign on one server whose
// keyring and ledgers are in a three-member etcd cluster: one key at 1
// and 16 callers, then 16 keys.
func (b *bench) ethEtcdTable(dir string) ([]row, error) {
	cluster, err := etcdtest.Run(filepath.Join(dir, "etcd-eth"), 3)
	if err != nil {
		return nil, err
	}
	defer cluster.Stop()
	conn, kr, stop, err := b.etcdReplica(b.ctx, cluster.Endpoints)
	if err != nil {
		return nil, err
	}
	defer stop()
	// Keys of their own: their objects share the token with the main
	// keyring's, whose IDs they must not take.
	const txKey, signKey = "bench-etcd-eth", "bench-etcd-k1"
	for _, spec := range []keyring.CreateSpec{
		{ID: txKey, Purpose: eth.Name, Algorithm: signer.ES256K, Policy: &eth.Policy{ChainIDs: []uint64{1}}},
		{ID: signKey, Purpose: raw.Name, Algorithm: signer.ES256K},
	} {
		if _, err := kr.Create(b.ctx, spec); err != nil {
			return nil, err
		}
	}
	sign, txs := sigilv1.NewSigningServiceClient(conn), sigilv1.NewEthereumServiceClient(conn)
	d := signer.ES256K.Input([]byte("about a transaction's signing hash"))
	signK1 := func(ctx context.Context) error {
		_, err := sign.Sign(ctx, &sigilv1.SignRequest{KeyId: signKey, Input: &sigilv1.SignRequest_Digest{Digest: d}})
		return err
	}
	const name = "SignTransaction, etcd"
	rows, err := b.pair(name, signK1, func(ctx context.Context) error {
		_, err := txs.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: txKey, Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: b.nextTx("")}})
		return err
	}, []int{1, 16})
	if err != nil {
		return nil, err
	}
	many, err := b.manyKeys(kr, conn, "bench-etcd-eth-", name+", 16 keys", signK1)
	return append(rows, many...), err
}

// replicaTable: ES256 Sign spread over three replicas that share their
// keyring in etcd (each its own etcd client, keyring and gRPC server over
// the one token), against the same load on one of them. On two cores
// this shows what replication costs, not how it scales.
func (b *bench) replicaTable(dir string) ([]row, error) {
	cluster, err := etcdtest.Run(filepath.Join(dir, "etcd"), 1)
	if err != nil {
		return nil, err
	}
	defer cluster.Stop()
	var conns []*grpc.ClientConn
	var krs []*keyring.Keyring
	for range 3 {
		conn, kr, stop, err := b.etcdReplica(b.ctx, cluster.Endpoints)
		if err != nil {
			return nil, err
		}
		defer stop()
		conns, krs = append(conns, conn), append(krs, kr)
	}
	if _, err := krs[0].Create(b.ctx, keyring.CreateSpec{ID: "bench-replicated", Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, e1 := krs[1].Get(b.ctx, "bench-replicated")
		_, e2 := krs[2].Get(b.ctx, "bench-replicated")
		if e1 == nil && e2 == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the replicas did not see the key")
		}
	}
	req := &sigilv1.SignRequest{KeyId: "bench-replicated", Input: &sigilv1.SignRequest_Digest{Digest: signer.ES256.Input([]byte("x"))}}
	clients := []sigilv1.SigningServiceClient{sigilv1.NewSigningServiceClient(conns[0]), sigilv1.NewSigningServiceClient(conns[1]), sigilv1.NewSigningServiceClient(conns[2])}
	var next atomic.Uint64
	return b.pair("Sign, 3 replicas", func(ctx context.Context) error {
		_, err := clients[0].Sign(ctx, req)
		return err
	}, func(ctx context.Context) error {
		_, err := clients[next.Add(1)%3].Sign(ctx, req)
		return err
	}, []int{16})
}
