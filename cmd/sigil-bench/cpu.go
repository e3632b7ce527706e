package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
)

// The throughput tables run the load driver's gRPC client in the server's
// process, on the same two cores, so its CPU counts against Sigil. This
// table moves the client into a child process (this binary, in client
// mode) and reads the server process's own CPU time: CPU per signature
// of the backend called in-process against the same signature served
// over gRPC by Sigil. It says what Sigil would reach with its load
// elsewhere, which throughput on one 2-core machine cannot show.

// cpuRow is one alternation's medians: CPU time per operation.
type cpuRow struct {
	callers   int
	raw, grpc time.Duration // this process's CPU per operation
	clientOps float64       // Sigil's throughput with the client outside
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTable measures ES256 at 16 callers, alternating the two sides.
func (b *bench) cpuTable() ([]cpuRow, error) {
	grpcAddr := b.conn.Target()
	const c = 16
	id, err := b.rawKey(signer.ES256)
	if err != nil {
		return nil, err
	}
	sg, err := b.kr.ForSigning(b.ctx, id, raw.Name)
	if err != nil {
		return nil, err
	}
	in := signer.ES256.Input([]byte("x"))
	raw := func(ctx context.Context) error {
		_, err := b.hsm.Sign(ctx, sg.Generation.Ref, signer.ES256, in)
		return err
	}
	var raws, grpcs []time.Duration
	var ops []float64
	for range rounds {
		if _, err := runFor(b.ctx, raw, c, b.dur/5); err != nil {
			return nil, err
		}
		cpu0 := processCPU()
		lat, err := runFor(b.ctx, raw, c, b.dur)
		if err != nil {
			return nil, err
		}
		raws = append(raws, (processCPU()-cpu0)/time.Duration(len(lat)))
		perOp, opsPerSec, err := b.childLoad(grpcAddr, c)
		if err != nil {
			return nil, err
		}
		grpcs, ops = append(grpcs, perOp), append(ops, opsPerSec)
	}
	row := cpuRow{callers: c, raw: medianOf(raws), grpc: medianOf(grpcs), clientOps: medianOf(ops)}
	fmt.Fprintf(os.Stderr, "CPU per ES256 signature at %d callers: in-process %v, Sigil server %v, ratio %.2f\n", c, row.raw, row.grpc, row.ratio())
	return []cpuRow{row}, nil
}

func (r cpuRow) ratio() float64 { return float64(r.raw) / float64(r.grpc) }

func medianOf[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// childLoad runs the Sign load from a child process and returns this
// process's CPU per signature while the child measured, and the child's
// throughput. The child says "start" when its measured window opens and
// "end N" with N signatures when it closes.
func (b *bench) childLoad(addr string, callers int) (time.Duration, float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.CommandContext(b.ctx, self, "-client", addr, "-callers", strconv.Itoa(callers), "-duration", b.dur.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer cmd.Wait()
	var cpu0 time.Duration
	var start time.Time
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		switch f := strings.Fields(sc.Text()); {
		case len(f) == 1 && f[0] == "start":
			cpu0, start = processCPU(), time.Now()
		case len(f) == 2 && f[0] == "end" && !start.IsZero():
			cpu, elapsed := processCPU()-cpu0, time.Since(start)
			n, err := strconv.Atoi(f[1])
			if err != nil || n == 0 {
				return 0, 0, fmt.Errorf("client said %q", sc.Text())
			}
			return cpu / time.Duration(n), float64(n) / elapsed.Seconds(), nil
		}
	}
	return 0, 0, fmt.Errorf("the client process ended without a result: %v", cmd.Wait())
}

// runClient is the child: ES256 Sign on the plain server at addr from
// callers goroutines, a warm-up, then a measured window it announces.
func runClient(addr string, callers int, dur time.Duration) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := sigilv1.NewSigningServiceClient(conn)
	req := &sigilv1.SignRequest{KeyId: "bench-es256", Input: &sigilv1.SignRequest_Digest{Digest: signer.ES256.Input([]byte("x"))}}
	op := func(ctx context.Context) error { _, err := client.Sign(ctx, req); return err }
	ctx := context.Background()
	if _, err := runFor(ctx, op, callers, dur/5); err != nil {
		return err
	}
	fmt.Println("start")
	lat, err := runFor(ctx, op, callers, dur)
	if err != nil {
		return err
	}
	fmt.Println("end", len(lat))
	return nil
}
