package main

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// row is one cell: a baseline and what is compared to it, at a number of
// callers.
type row struct {
	name     string
	callers  int
	base     result
	measured result
	paired   float64 // the median of the rounds' own ratios; 0 if not measured in rounds
}

// ratio is the row's throughput ratio: the median of its rounds' ratios
// when it has them (a round measures both sides back to back, so a slow
// spell of a shared machine falls on both), else one of the medians.
func (r row) ratio() float64 {
	if r.paired > 0 {
		return r.paired
	}
	return r.measured.opsPerSec / r.base.opsPerSec
}
func (r row) overhead() time.Duration { return r.measured.p50 - r.base.p50 }

type report struct {
	floor                                                                                                                     []result
	sign, jwt, jwks, eth, ethEtcd, secured, namespaced, ethRPC, send, reviewed, kms, replicas, audit, batch, tracing, console []row
	cpu                                                                                                                       []cpuRow
	latency                                                                                                                   *latencies
}

func (rep report) write(path string, dur time.Duration) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (cmd/sigil-bench) on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Machine: %s; %d CPUs; %s %s/%s; SoftHSM %s. ", cpuModel(), runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, softhsmVersion())
	fmt.Fprintf(&b, "Each cell alternates its baseline and Sigil %d times for %v each (after a warm-up) and reports each side's median round and, as the throughput ratio, the median of the rounds' ratios; the load driver, the server and SoftHSM share the same cores.\n", rounds, dur)

	b.WriteString("\n## Sign through gRPC against the PKCS#11 backend in-process\n\n")
	fmt.Fprintf(&b, "One key per algorithm in one SoftHSM token with a %d-session pool, shared by both sides.\n\n", sessions)
	table(&b, "raw", "gRPC", rep.sign)
	b.WriteString("\nThe floor under every row: a gRPC call that does no work (health `Check`) on the same connection.\n\n")
	b.WriteString("| callers | ops/s | p50 | p99 |\n|---:|---:|---:|---:|\n")
	for i, r := range rep.floor {
		fmt.Fprintf(&b, "| %d | %.0f | %s | %s |\n", callers[i], r.opsPerSec, us(r.p50), us(r.p99))
	}
	b.WriteString("\nAt 16 callers the two cores are saturated, so the throughput ratio measures CPU per signature, and the gRPC side's CPU includes the load driver's own gRPC client; p50 at 16 callers is mostly queueing. At 1 caller, the p50 overhead minus the floor's p50 is what Sigil's handler and the hand-offs around a long cgo call add.\n")

	b.WriteString("\n## CPU per ES256 signature in the server's process, the load driven from another process\n\n")
	b.WriteString("The load driver's gRPC client runs in a child process, so the server process's CPU time (getrusage) is Sigil's alone. In-process: the PKCS#11 backend called directly. The ratio is what Sigil's throughput would be against in-process signing where the load does not share the server's cores.\n\n")
	b.WriteString("| callers | in-process CPU/op | Sigil server CPU/op | CPU ratio | Sigil ops/s, client in another process |\n|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.cpu {
		fmt.Fprintf(&b, "| %d | %s | %s | %.2f | %.0f |\n", r.callers, us(r.raw), us(r.grpc), r.ratio(), r.clientOps)
	}

	b.WriteString("\n## SignJWT against Sign, both through gRPC (ES256)\n\n")
	table(&b, "Sign", "SignJWT", rep.jwt)
	b.WriteString("\n## JWKS endpoint against a static-bytes net/http handler\n\n")
	table(&b, "static", "Sigil", rep.jwks)
	b.WriteString("\n## SignTransaction (EIP-1559) against ES256K Sign, both through gRPC\n\n")
	table(&b, "Sign", "SignTransaction", rep.eth)
	if len(rep.ethEtcd) > 0 {
		b.WriteString("\n## SignTransaction against ES256K Sign with the keyring in etcd (three members)\n\n")
		b.WriteString("One server whose keyring, nonce guard and daily limits are in a three-member etcd cluster embedded in the bench's process, all on this machine's cores: each ledger write is an etcd transaction a quorum commits to its write-ahead log.\n\n")
		table(&b, "Sign", "SignTransaction", rep.ethEtcd)
	}
	b.WriteString("\n## ES256 Sign with mTLS, authorization and the audit log against plain Sign\n\n")
	b.WriteString("The secured server runs TLS 1.3 with client certificates, checks the policy and writes each decision to the hash-chained audit log, written in batches before it answers, and fsynced by a goroutine of its own.\n\n")
	table(&b, "plain", "secured", rep.secured)
	if l := rep.latency; l != nil {
		b.WriteString("\n## One caller's ES256 signature, part by part\n\n")
		b.WriteString("One caller runs a no-op gRPC call (health `Check`, the floor), an ES256 signature by the PKCS#11 backend in-process, Sign on the plain server and Sign on the secured one, one after another call by call, so that every part is measured in the same moments of the machine. What a server adds is its Sign's p50 less the floor's and the in-process signature's.\n\n")
		b.WriteString("| what | p50 | p99 | added to the floor and the signature |\n|---|---:|---:|---:|\n")
		fmt.Fprintf(&b, "| no-op gRPC call | %s | %s | |\n", us(l.floor.p50), us(l.floor.p99))
		fmt.Fprintf(&b, "| ES256 in-process | %s | %s | |\n", us(l.inProcess.p50), us(l.inProcess.p99))
		fmt.Fprintf(&b, "| Sign, plain | %s | %s | %s |\n", us(l.plain.p50), us(l.plain.p99), us(l.over(l.plain)))
		fmt.Fprintf(&b, "| Sign, secured | %s | %s | %s |\n", us(l.secured.p50), us(l.secured.p99), us(l.over(l.secured)))
	}
	b.WriteString("\n## ES256 through SignBatch against in-process signing\n\n")
	b.WriteString("An operation on each side is 100 ES256 signatures: one SignBatch call of 100 items on the secured server (each item authorized, charged and audited as a Sign of its own), against 100 signatures by the PKCS#11 backend called in-process.\n\n")
	table(&b, "in-process ×100", "SignBatch ×100", rep.batch)
	b.WriteString("\n## ES256 Sign with tracing on against off\n\n")
	b.WriteString("On the secured server: tracing off (no span recorded) against spans exported over OTLP/gRPC to a real collector (Jaeger, in-memory), sampling 1 % and then 100 % of the traces the server starts.\n\n")
	table(&b, "tracing off", "tracing on", rep.tracing)
	b.WriteString("\n## ES256 Sign in a namespace against Sign in root\n\n")
	b.WriteString("Both on the secured server, each with its own key in the one token; the namespaced call carries the sigil-namespace header, so the server scopes the request, looks the namespace up (and whether it is frozen) and unscopes the answer.\n\n")
	table(&b, "root", "namespace", rep.namespaced)
	b.WriteString("\n## eth_signTransaction over the Ethereum JSON-RPC endpoint against SignTransaction over gRPC\n\n")
	b.WriteString("Both on the secured server: mTLS with the dev client certificate, the policy and the audit log; the JSON-RPC side over HTTPS keep-alive connections, each call run in process through the same access path.\n\n")
	table(&b, "gRPC", "JSON-RPC", rep.ethRPC)
	if len(rep.send) > 0 {
		b.WriteString("\n## eth_sendTransaction through Sigil against eth_signTransaction and the client's own eth_sendRawTransaction\n\n")
		b.WriteString("geth --dev behind the secured server's endpoint, mining each transaction as it arrives. Sigil fills the nonce (the node's pending count and its nonce ledger), gas (eth_estimateGas) and fees (the latest block and eth_maxPriorityFeePerGas), signs and submits; the baseline client fills the transaction itself (its own nonce counter, fixed gas and fees), asks Sigil to sign it and submits it to the node. A key each, one caller.\n\n")
		table(&b, "sign + own send", "eth_sendTransaction", rep.send)
	}
	b.WriteString("\n## SignTransaction on a key an approval rule covers against one no rule covers\n\n")
	b.WriteString("Both on the secured server. The rule (dual control) holds transactions of 10^24 wei and more; the bench's move 1 ETH, so each is reviewed (parsed again, its key and nonce record read) and runs at once. Each transaction takes a new nonce, so both sides make the nonce guard's two durable ledger writes.\n\n")
	table(&b, "uncovered", "reviewed", rep.reviewed)
	b.WriteString("\n## ES256 Sign over three replicas sharing a keyring in etcd against one replica\n\n")
	b.WriteString("Each replica has its own etcd client, in-memory keyring and gRPC server over the one SoftHSM token; the load is spread round-robin. Signing reads the keyring from memory, so etcd is off the signing path; on this 2-core machine the table shows what replication costs, not how it scales.\n\n")
	table(&b, "1 replica", "3 replicas", rep.replicas)
	b.WriteString("\n## Audit appends with the chain's head anchored in the store against checkpoints only\n\n")
	b.WriteString("Each append is answered after its fsync, as every response is. The anchored side also writes the head (sequence and hash of the last record on disk) to the bbolt keyring store after each fsync, coalesced to at most one write every 200 ms, so a tail cut after a crash is detected; the baseline anchors only its signed checkpoints (every 1000 records or 10 s).\n\n")
	table(&b, "checkpoints only", "head anchored", rep.audit)
	if len(rep.console) > 0 {
		fmt.Fprintf(&b, "\n## Console pages over %d keys against the same pages over %d\n\n", consoleKeys, consoleFewKeys)
		b.WriteString("Signed in with a passkey (in software, through the console's API), one caller over loopback HTTPS with keep-alive: a page's time is the server's reads through the access path as the operator, its template, and a round trip. The keys page filters, counts and pages every key the operator may read (100 a page); the keys are records cloned from one ES256 key made in SoftHSM (a page reads records, never the HSM), with 50 owners and two env labels.\n\n")
		table(&b, fmt.Sprintf("%d keys", consoleFewKeys), fmt.Sprintf("%d keys", consoleKeys), rep.console)
	}
	if len(rep.kms) > 0 {
		b.WriteString("\n## ES256 Sign through Sigil with a KMS key against direct AWS SDK calls to the emulator (local-kms)\n\n")
		table(&b, "SDK", "Sigil", rep.kms)
	}

	b.WriteString("\n## Targets\n\n")
	for _, t := range []struct {
		what  string
		rows  []row
		name  string
		c     int
		check func(row) (string, bool)
	}{
		{"ES256 Sign at 16 callers ≥ 0.80 of raw", rep.sign, "ES256", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.8 }},
		{"ES256 Sign p50 overhead < 150 µs at 1 caller", rep.sign, "ES256", 1, func(r row) (string, bool) { return us(r.overhead()), r.overhead() < 150*time.Microsecond }},
		{"SignJWT overhead < 10% at 16 callers", rep.jwt, "SignJWT ES256", 16, func(r row) (string, bool) {
			return fmt.Sprintf("%.0f%%", 100*(1-r.ratio())), r.ratio() > 0.9
		}},
		{"JWKS ≥ 0.80 of static bytes at 16 callers", rep.jwks, "JWKS GET", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.8 }},
		{"ES256 via SignBatch (100 items a call) ≥ 0.90 of in-process signing at 16 callers", rep.batch, "SignBatch ×100", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.9 }},
		{"Sign with tracing at 1 % ≥ 0.95 of tracing off at 16 callers", rep.tracing, "Sign, tracing 1 %", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.95 }},
		{"secured Sign ≥ 0.75 of plain Sign at 16 callers", rep.secured, "Sign, secured", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.75 }},
		{"secured Sign ≥ 0.90 of plain Sign at 16 callers", rep.secured, "Sign, secured", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.9 }},
		{"namespaced Sign within 5% of Sign in root at 1 caller", rep.namespaced, "Sign in a namespace", 1, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.95 }},
		{"namespaced Sign within 5% of Sign in root at 16 callers", rep.namespaced, "Sign in a namespace", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.95 }},
		{"KMS Sign through Sigil ≥ 0.80 of direct SDK calls at 16 callers", rep.kms, "Sign on KMS", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.8 }},
		{"SignTransaction ≥ 0.85 of ES256K Sign at 16 callers", rep.eth, "SignTransaction", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.85 }},
		{"SignTransaction on one key ≥ 0.30 of ES256K Sign at 16 callers", rep.eth, "SignTransaction", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.3 }},
		{"SignTransaction on 16 keys ≥ 0.50 of ES256K Sign at 16 callers", rep.eth, "SignTransaction, 16 keys", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.5 }},
		{"eth_signTransaction over JSON-RPC ≥ 0.80 of gRPC at 16 callers", rep.ethRPC, "eth_signTransaction", 16, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.8 }},
		{"eth_sendTransaction ≥ 0.90 of eth_signTransaction + the client's own eth_sendRawTransaction", rep.send, "eth_sendTransaction", 1, func(r row) (string, bool) { return fmt.Sprintf("%.2f", r.ratio()), r.ratio() >= 0.9 }},
	} {
		for _, r := range t.rows {
			if r.name == t.name && r.callers == t.c {
				got, ok := t.check(r)
				fmt.Fprintf(&b, "- %s: %s, %s\n", t.what, got, verdict(ok))
			}
		}
	}
	if l := rep.latency; l != nil {
		r := l.over(l.secured)
		fmt.Fprintf(&b, "- secured Sign p50 at 1 caller ≤ 60 µs over in-process signing plus the no-op gRPC floor, measured call by call: %s, %s\n", us(r), verdict(r <= 60*time.Microsecond))
	}
	if len(rep.console) > 0 {
		slowest := slices.MaxFunc(rep.console, func(x, y row) int { return cmp.Compare(x.measured.p50, y.measured.p50) })
		fmt.Fprintf(&b, "- every console page renders in < 50 ms with %d keys (p50; the slowest, %s): %s, %s\n", consoleKeys, slowest.name, us(slowest.measured.p50), verdict(slowest.measured.p50 < 50*time.Millisecond))
	}
	for _, r := range rep.cpu {
		fmt.Fprintf(&b, "\nFor the first target, the server's own CPU per ES256 signature at %d callers, the load driver's client excluded: %.2f of in-process signing.\n", r.callers, r.ratio())
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func table(b *bytes.Buffer, base, measured string, rows []row) {
	fmt.Fprintf(b, "| what | callers | %[1]s ops/s | %[1]s p50 | %[1]s p99 | %[2]s ops/s | %[2]s p50 | %[2]s p99 | throughput ratio | p50 overhead |\n", base, measured)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(b, "| %s | %d | %.0f | %s | %s | %.0f | %s | %s | %.2f | %s |\n", r.name, r.callers,
			r.base.opsPerSec, us(r.base.p50), us(r.base.p99), r.measured.opsPerSec, us(r.measured.p50), us(r.measured.p99), r.ratio(), us(r.overhead()))
	}
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
