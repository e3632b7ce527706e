package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/signer"
)

// row is one cell: an algorithm at a concurrency, both sides.
type row struct {
	alg     signer.Algorithm
	callers int
	raw     result
	grpc    result
}

func writeReport(path string, rows []row, floor []result, dur time.Duration) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (cmd/sigil-bench) on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Machine: %s; %d CPUs; %s %s/%s; SoftHSM %s.\n\n", cpuModel(), runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, softhsmVersion())
	b.WriteString("Sign of one key, **raw** = the PKCS#11 backend called in-process (the baseline), **gRPC** = `SigningService.Sign` through a Sigil server on loopback. ")
	fmt.Fprintf(&b, "Both sides share one SoftHSM token with a %d-session pool and run back to back for %v per cell after a warm-up; ", sessions, dur)
	b.WriteString("the load driver, the server and SoftHSM share the same cores, so the gRPC side pays for its client too.\n\n")
	b.WriteString("| alg | callers | raw ops/s | raw p50 | raw p99 | gRPC ops/s | gRPC p50 | gRPC p99 | throughput ratio | p50 overhead |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %.0f | %s | %s | %.2f | %s |\n", r.alg, r.callers,
			r.raw.opsPerSec, us(r.raw.p50), us(r.raw.p99), r.grpc.opsPerSec, us(r.grpc.p50), us(r.grpc.p99),
			r.grpc.opsPerSec/r.raw.opsPerSec, us(r.grpc.p50-r.raw.p50))
	}
	b.WriteString("\nThe floor under every row: a gRPC call that does no work (health `Check`) on the same connection, same run.\n\n")
	b.WriteString("| callers | ops/s | p50 | p99 |\n|---:|---:|---:|---:|\n")
	for i, r := range floor {
		fmt.Fprintf(&b, "| %d | %.0f | %s | %s |\n", callers[i], r.opsPerSec, us(r.p50), us(r.p99))
	}
	for _, r := range rows {
		if r.alg == signer.ES256 && r.callers == 16 {
			fmt.Fprintf(&b, "\nTargets (issue: Sigil core): ES256 at 16 callers reaches %.2f of raw throughput (target ≥ 0.80: %s); ",
				r.grpc.opsPerSec/r.raw.opsPerSec, verdict(r.grpc.opsPerSec/r.raw.opsPerSec >= 0.8))
			fmt.Fprintf(&b, "p50 overhead %s (target < 150 µs: %s).\n", us(r.grpc.p50-r.raw.p50), verdict(r.grpc.p50-r.raw.p50 < 150*time.Microsecond))
		}
	}
	b.WriteString("\nHow to read this: at 16 callers the machine's two cores are saturated, so the throughput ratio measures CPU per signature, ")
	b.WriteString("and the gRPC side's CPU includes the load driver's own gRPC client; p50 at 16 callers is mostly queueing. ")
	b.WriteString("At 1 caller, the p50 overhead minus the floor's p50 is what Sigil's handler and the hand-offs around a long cgo call add.\n")
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func us(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return "unknown CPU"
}

func softhsmVersion() string {
	out, err := exec.Command("softhsm2-util", "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
