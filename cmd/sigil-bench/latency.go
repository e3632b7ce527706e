package main

import (
	"context"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
)

// latencies are one caller's parts of a signature's time, measured call
// by call in turn (see latencyTable).
type latencies struct {
	floor, inProcess, plain, secured result
}

// over is what a server whose Sign took r adds to a signature at one
// caller: r's p50 less the floor's and the in-process signature's.
func (l latencies) over(r result) time.Duration { return r.p50 - l.floor.p50 - l.inProcess.p50 }

// latencyTable: at one caller, a no-op gRPC call (health Check, the
// floor), an ES256 signature by the backend in-process, Sign on the plain
// server and Sign on the secured one (mTLS, policy, audit), one after
// another call by call for three times the cell time. Measured so, the
// parts see the same moments of the machine: a floor measured on its own,
// with no signing going on around it, is some tens of microseconds
// quicker than one measured between signatures.
func (b *bench) latencyTable(secured *grpc.ClientConn) (latencies, error) {
	id, err := b.rawKey(signer.ES256)
	if err != nil {
		return latencies{}, err
	}
	sg, err := b.kr.ForSigning(b.ctx, id, raw.Name)
	if err != nil {
		return latencies{}, err
	}
	in := signer.ES256.Input([]byte("x"))
	req := &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: in}}
	health, plain, sec := healthpb.NewHealthClient(b.conn), sigilv1.NewSigningServiceClient(b.conn), sigilv1.NewSigningServiceClient(secured)
	ops := []func(context.Context) error{
		func(ctx context.Context) error {
			_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		},
		func(ctx context.Context) error {
			_, err := b.hsm.Sign(ctx, sg.Generation.Ref, signer.ES256, in)
			return err
		},
		func(ctx context.Context) error { _, err := plain.Sign(ctx, req); return err },
		func(ctx context.Context) error { _, err := sec.Sign(ctx, req); return err },
	}
	if _, err := rotate(b.ctx, ops, b.dur/5); err != nil {
		return latencies{}, err
	}
	lat, err := rotate(b.ctx, ops, 3*b.dur)
	if err != nil {
		return latencies{}, err
	}
	return latencies{summary(lat[0]), summary(lat[1]), summary(lat[2]), summary(lat[3])}, nil
}
