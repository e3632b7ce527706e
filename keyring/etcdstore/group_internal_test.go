package etcdstore

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/groupcommit"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
)

// A batch's write transaction commits but its answer is lost (the
// connection drops after etcd applied it: Unavailable). Its rewrites
// must not run again (a claim run twice finds itself and fails, its
// nonce locked for the claim's lease): each caller is told of the
// failure, and the counter holds each increment at most once, and every
// one a caller was told succeeded.
func TestLostAnswerIsNotAppliedTwice(t *testing.T) {
	c := etcdtest.Start(t, 1)
	var armed atomic.Bool
	drop := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if tr, ok := req.(*pb.TxnRequest); ok && err == nil && len(tr.Compare) > 0 && armed.Load() {
			for _, op := range tr.Success {
				if p := op.GetRequestPut(); p != nil && strings.Contains(string(p.Key), "counter") && armed.CompareAndSwap(true, false) {
					return status.Error(codes.Unavailable, "injected: connection lost after the request was sent")
				}
			}
		}
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(drop)}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s := &Store{cli: cli, prefix: "/lost/", group: groupcommit.Group[*rewriteOp]{Max: maxGroup}}
	ctx := context.Background()
	gate := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // leads the first batch and holds it while the others queue
		s.UpdateAnchor(ctx, "gate", func([]byte) ([]byte, error) { <-gate; return []byte("x"), nil })
	})
	time.Sleep(50 * time.Millisecond)
	results := make([]error, 4)
	for i := range results {
		wg.Go(func() {
			results[i] = s.UpdateAnchor(ctx, "counter", func(old []byte) ([]byte, error) {
				n, _ := strconv.Atoi(string(old))
				return []byte(strconv.Itoa(n + 1)), nil
			})
		})
	}
	time.Sleep(100 * time.Millisecond)
	armed.Store(true)
	close(gate)
	wg.Wait()
	ok := 0
	for _, err := range results {
		if err == nil {
			ok++
		}
	}
	v, _ := s.GetAnchor(ctx, "counter")
	if n, _ := strconv.Atoi(string(v)); n > len(results) || n < ok || armed.Load() {
		t.Errorf("counter %d after %d increments, %d answered OK (errors %v; the loss injected: %v)", n, len(results), ok, results, !armed.Load())
	}
}
