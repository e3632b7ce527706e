// Command sigil-bench is the load driver behind `make bench`. In one run,
// against one fresh SoftHSM token, it measures signing two ways at 1, 2 and
// 16 concurrent callers:
//
//   - raw: the PKCS#11 backend called in-process (the baseline), and
//   - gRPC: Sign through a Sigil server over loopback,
//
// and writes ops/s, p50 and p99 of both, with their ratio, to a Markdown
// table. Each cell runs the baseline and Sigil back to back, so drift in
// the machine affects both alike. Nothing here asserts a time: the table
// is read by people.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-hsm/sigil/internal/secret"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

func main() {
	out := flag.String("out", "BENCHMARKS.md", "where to write the table")
	dur := flag.Duration("duration", 2*time.Second, "measuring time per cell and side")
	only := flag.String("alg", "", "measure only this algorithm")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	flag.Parse()
	if *only != "" {
		algs = []signer.Algorithm{signer.Algorithm(*only)}
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*out, *dur); err != nil {
		log.Fatal(err)
	}
}

var (
	algs    = []signer.Algorithm{signer.ES256, signer.ES256K, signer.EdDSA, signer.RS256}
	callers = []int{1, 2, 16}
)

// sessions is the pool size for both sides, so neither waits for sessions
// the other would have had.
const sessions = 16

func run(out string, dur time.Duration) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "sigil-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	hsm, err := openToken(ctx, dir)
	if err != nil {
		return err
	}
	defer hsm.Close()
	store, err := boltstore.Open(filepath.Join(dir, "keyring.db"))
	if err != nil {
		return err
	}
	defer store.Close()
	backends := map[string]signer.Backend{"bench": hsm}
	kr, err := keyring.New(ctx, keyring.Options{Store: store, Backends: backends, DefaultBackend: "bench"})
	if err != nil {
		return err
	}
	conn, stop, err := startServer(ctx, kr, backends)
	if err != nil {
		return err
	}
	defer stop()
	client := sigilv1.NewSigningServiceClient(conn)

	var floor []result
	health := healthpb.NewHealthClient(conn)
	for _, c := range callers {
		r, err := measure(ctx, func(ctx context.Context) error {
			_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, c, dur)
		if err != nil {
			return err
		}
		floor = append(floor, r)
	}

	var rows []row
	for _, alg := range algs {
		id := "bench-" + strings.ToLower(string(alg))
		if _, err := kr.Create(ctx, keyring.CreateSpec{ID: id, Purpose: keyring.PurposeRaw, Algorithm: alg}); err != nil {
			return err
		}
		sg, err := kr.ForSigning(ctx, id, keyring.PurposeRaw)
		if err != nil {
			return err
		}
		msg := make([]byte, 100) // about a JWT signing input
		rand.Read(msg)
		in := alg.Input(msg)
		rawOp := func(ctx context.Context) error {
			_, err := hsm.Sign(ctx, sg.Generation.Ref, alg, in)
			return err
		}
		req := &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: in}}
		if alg == signer.EdDSA {
			req.Input = &sigilv1.SignRequest_Message{Message: in}
		}
		grpcOp := func(ctx context.Context) error {
			_, err := client.Sign(ctx, req)
			return err
		}
		for _, c := range callers {
			raw, err := measure(ctx, rawOp, c, dur)
			if err != nil {
				return err
			}
			viaGRPC, err := measure(ctx, grpcOp, c, dur)
			if err != nil {
				return err
			}
			rows = append(rows, row{alg, c, raw, viaGRPC})
			fmt.Fprintf(os.Stderr, "%-6s %2d callers: raw %8.0f ops/s  gRPC %8.0f ops/s  ratio %.2f\n", alg, c, raw.opsPerSec, viaGRPC.opsPerSec, viaGRPC.opsPerSec/raw.opsPerSec)
		}
	}
	return writeReport(out, rows, floor, dur)
}

func openToken(ctx context.Context, dir string) (*pkcs11.Backend, error) {
	if err := softhsm.Available(); err != nil {
		return nil, err
	}
	conf, err := softhsm.WriteConf(dir)
	if err != nil {
		return nil, err
	}
	os.Setenv(softhsm.ConfEnv, conf)
	tok, err := softhsm.InitToken(conf, dir, "bench")
	if err != nil {
		return nil, err
	}
	return pkcs11.Open(ctx, "bench", pkcs11.Config{Module: softhsm.Module, Token: tok.Label, PIN: secret.Ref("file:" + tok.PINFile), Sessions: sessions})
}

func startServer(ctx context.Context, kr *keyring.Keyring, backends map[string]signer.Backend) (*grpc.ClientConn, func(), error) {
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	done := make(chan error, 1)
	go func() {
		done <- server.New(server.Options{Keyring: kr, Backends: backends, Logger: quiet}).Serve(ctx, gl, hl)
	}()
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return conn, func() { conn.Close(); cancel(); <-done }, nil
}
