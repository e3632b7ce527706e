// Command sigil-bench is the load driver behind `make bench`. In one run,
// against one fresh SoftHSM token, it measures each thing Sigil adds
// against a baseline measured alongside it:
//
//   - Sign through gRPC on loopback against the PKCS#11 backend called
//     in-process, for ES256, ES256K, EdDSA and RS256 at 1, 2 and 16
//     callers, with a no-op gRPC call as the floor;
//   - SignJWT against Sign, both through gRPC (what minting a JWT adds);
//   - the JWKS endpoint against a net/http handler writing static bytes;
//   - CPU per signature in the server's process, with the load driven
//     from a child process (cpu.go), and the other tables' subjects
//     (SignTransaction, mTLS with audit, KMS, three replicas).
//
// It writes ops/s, p50 and p99 with their ratios to a Markdown file.
// Each baseline runs back to back with what it is compared to, so drift
// in the machine affects both alike. Nothing here asserts a time: the
// tables are read by people.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/internal/secret"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/internal/testutil/gethtest"
	"github.com/sigil-hsm/sigil/internal/testutil/jaegertest"
	"github.com/sigil-hsm/sigil/internal/testutil/kmstest"
	"github.com/sigil-hsm/sigil/internal/tracing"
	"github.com/sigil-hsm/sigil/jwks"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/awskms"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

func main() {
	out := flag.String("out", "BENCHMARKS.md", "where to write the tables")
	dur := flag.Duration("duration", time.Second, "measuring time per round, cell and side")
	only := flag.String("alg", "", "measure only this algorithm in the Sign table")
	tables := flag.String("tables", "", "measure only these tables (comma-separated: sign,cpu,jwt,jwks,eth,ethetcd,secured,latency,batch,tracing,ethrpc,namespaced,send,reviewed,kms,replicas,audit,console); the report then holds only them")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	client := flag.String("client", "", "internal: be the load of the CPU table against this gRPC address")
	clientCallers := flag.Int("callers", 16, "internal: callers of -client")
	flag.Parse()
	if *client != "" {
		if err := runClient(*client, *clientCallers, *dur); err != nil {
			log.Fatal(err)
		}
		return
	}
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
	if *tables != "" {
		want = map[string]bool{}
		for _, t := range strings.Split(*tables, ",") {
			want[strings.TrimSpace(t)] = true
		}
	}
	if err := run(*out, *dur); err != nil {
		log.Fatal(err)
	}
}

// want names the tables to measure; nil is all of them.
var want map[string]bool

// measure reports whether table is to be measured.
func measured(table string) bool { return want == nil || want[table] }

var (
	algs    = []signer.Algorithm{signer.ES256, signer.ES256K, signer.EdDSA, signer.RS256}
	callers = []int{1, 2, 16}
)

// sessions is the pool size for both sides, so neither waits for sessions
// the other would have had.
const sessions = 16

// bench is one run's fixtures: a token, a keyring and a server over them.
type bench struct {
	ctx      context.Context
	dur      time.Duration
	hsm      *pkcs11.Backend
	kr       *keyring.Keyring
	store    *boltstore.Store
	backends map[string]signer.Backend
	conn     *grpc.ClientConn // to the plain server
	httpAddr string
	// the secured server's Ethereum JSON-RPC endpoint, and a client of it
	ethRPC       string
	ethRPCClient *http.Client
	nonce        atomic.Uint64 // of bench-eth's transactions: each one new
}

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
	kmsEndpoint, stopKMS, err := startKMS(ctx, dir, backends)
	if err != nil {
		return err
	}
	defer stopKMS()
	kr, err := keyring.New(ctx, keyring.Options{Store: store, Backends: backends, DefaultBackend: "bench"})
	if err != nil {
		return err
	}
	b := &bench{ctx: ctx, dur: dur, hsm: hsm, kr: kr, store: store, backends: backends}
	pub := jwks.NewPublisher()
	if err := jwks.Follow(ctx, kr, jwt.Sets{}, pub, slog.Default()); err != nil {
		return err
	}
	conn, httpAddr, stop, err := b.startServer(kr, server.Options{JWKS: pub}, insecure.NewCredentials(), nil)
	if err != nil {
		return err
	}
	defer stop()
	b.conn, b.httpAddr = conn, httpAddr
	var node *gethtest.Node
	if gethtest.Available() == nil {
		n, stopNode, err := gethtest.Run(filepath.Join(dir, "geth"), time.Second)
		if err != nil {
			return err
		}
		defer stopNode()
		node = n
	} else {
		fmt.Fprintln(os.Stderr, "geth not built (make eth-deps): the eth_sendTransaction table is skipped")
	}
	secured, stopSecured, err := b.startSecured(dir, node)
	if err != nil {
		return err
	}
	defer stopSecured()
	var rep report
	if rep.floor, err = b.floor(); err != nil {
		return err
	}
	if measured("sign") {
		if rep.sign, err = b.signTable(); err != nil {
			return err
		}
	}
	if measured("cpu") {
		if rep.cpu, err = b.cpuTable(); err != nil {
			return err
		}
	}
	if measured("jwt") {
		if rep.jwt, err = b.jwtTable(); err != nil {
			return err
		}
	}
	if measured("jwks") {
		if rep.jwks, err = b.jwksTable(); err != nil {
			return err
		}
	}
	if measured("eth") {
		if rep.eth, err = b.ethTable(); err != nil {
			return err
		}
	}
	if measured("secured") {
		if rep.secured, err = b.securedTable(secured); err != nil {
			return err
		}
	}
	if measured("latency") {
		l, err := b.latencyTable(secured)
		if err != nil {
			return err
		}
		rep.latency = &l
	}
	if measured("batch") {
		if rep.batch, err = b.batchTable(secured); err != nil {
			return err
		}
	}
	if measured("tracing") {
		if rep.tracing, err = b.tracingTable(dir, secured); err != nil {
			return err
		}
	}
	if measured("ethrpc") {
		if rep.ethRPC, err = b.ethRPCTable(secured); err != nil {
			return err
		}
	}
	if measured("namespaced") {
		if rep.namespaced, err = b.namespaceTable(secured); err != nil {
			return err
		}
	}
	if node != nil && measured("send") {
		if rep.send, err = b.sendTable(secured, node); err != nil {
			return err
		}
	}
	if measured("reviewed") {
		if rep.reviewed, err = b.reviewedTable(secured); err != nil {
			return err
		}
	}
	if kmsEndpoint != "" && measured("kms") {
		if rep.kms, err = b.kmsTable(kmsEndpoint); err != nil {
			return err
		}
	}
	if measured("ethetcd") {
		if rep.ethEtcd, err = b.ethEtcdTable(dir); err != nil {
			return err
		}
	}
	if measured("replicas") {
		if rep.replicas, err = b.replicaTable(dir); err != nil {
			return err
		}
	}
	if measured("audit") {
		if rep.audit, err = b.auditTable(dir); err != nil {
			return err
		}
	}
	if measured("console") {
		if rep.console, err = b.consoleTable(dir); err != nil {
			return err
		}
	}
	return rep.write(out, dur)
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

// startKMS runs local-kms, if it is built, and adds a backend "kms" on it.
func startKMS(ctx context.Context, dir string, backends map[string]signer.Backend) (string, func(), error) {
	if kmstest.Available() != nil {
		fmt.Fprintln(os.Stderr, "local-kms not built (make kms-deps): the KMS table is skipped")
		return "", func() {}, nil
	}
	creds, err := kmstest.FakeCredentials()
	if err != nil {
		return "", nil, err
	}
	for k, v := range creds {
		os.Setenv(k, v)
	}
	e, err := kmstest.Run(filepath.Join(dir, "kms"))
	if err != nil {
		return "", nil, err
	}
	b, err := awskms.Open(ctx, "kms", awskms.Config{Region: kmstest.Region, Endpoint: e.Endpoint, MaxRPS: 1e6, MaxConcurrency: 64})
	if err != nil {
		e.Stop()
		return "", nil, err
	}
	backends["kms"] = b
	return e.Endpoint, e.Stop, nil
}

// kmsTable: ES256 Sign through Sigil with a KMS key against the same
// signature asked of the emulator directly with the AWS SDK.
func (b *bench) kmsTable(endpoint string) ([]row, error) {
	k, err := b.kr.Create(b.ctx, keyring.CreateSpec{ID: "bench-kms", Purpose: raw.Name, Algorithm: signer.ES256, Backend: "kms"})
	if err != nil {
		return nil, err
	}
	g, _ := k.Active()
	awsCfg, err := awsconfig.LoadDefaultConfig(b.ctx, awsconfig.WithRegion(kmstest.Region))
	if err != nil {
		return nil, err
	}
	direct := kms.NewFromConfig(awsCfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(endpoint) })
	d := signer.ES256.Input([]byte("x"))
	client := sigilv1.NewSigningServiceClient(b.conn)
	return b.pair("Sign on KMS", func(ctx context.Context) error {
		_, err := direct.Sign(ctx, &kms.SignInput{KeyId: aws.String(g.Ref), Message: d, MessageType: kmstypes.MessageTypeDigest, SigningAlgorithm: kmstypes.SigningAlgorithmSpecEcdsaSha256})
		return err
	}, func(ctx context.Context) error {
		_, err := client.Sign(ctx, &sigilv1.SignRequest{KeyId: "bench-kms", Input: &sigilv1.SignRequest_Digest{Digest: d}})
		return err
	}, []int{1, 16})
}

// startServer runs a server with opts (keyring, backends and a quiet
// logger added) on loopback and dials it with creds.
func (b *bench) startServer(kr *keyring.Keyring, opts server.Options, creds credentials.TransportCredentials, purposes map[string]net.Listener) (*grpc.ClientConn, string, func(), error) {
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	opts.Keyring, opts.Backends, opts.Logger = kr, b.backends, slog.New(slog.NewTextHandler(io.Discard, nil))
	if opts.Ledger == nil && kr == b.kr { // the nonce guard and daily limits keep their ledger in the store
		opts.Ledger, opts.Anchors = b.store, b.store
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() {
		done <- server.New(opts).Serve(ctx, server.Listeners{GRPC: gl, Public: hl, Admin: al, Purposes: purposes})
	}()
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		cancel()
		return nil, "", nil, err
	}
	return conn, hl.Addr().String(), func() { conn.Close(); cancel(); <-done }, nil
}

// startSecured runs a second server as production runs: mTLS (the dev
// PKI), an authorization policy and the audit log, fsynced per batch.
func (b *bench) startSecured(dir string, node *gethtest.Node) (*grpc.ClientConn, func(), error) {
	pki, err := mtls.EnsureDevPKI(filepath.Join(dir, "tls"))
	if err != nil {
		return nil, nil, err
	}
	serverTLS, err := mtls.ServerConfig(pki.Server(), nil)
	if err != nil {
		return nil, nil, err
	}
	clientTLS, err := mtls.ClientConfig(pki.ClientCert, pki.ClientKey, pki.CA)
	if err != nil {
		return nil, nil, err
	}
	if _, err := b.kr.EnsureAuditKey(b.ctx); err != nil {
		return nil, nil, err
	}
	// As serve runs it: checkpoints signed in the HSM and anchored in the store.
	al, err := audit.Open(b.ctx, audit.Options{Path: filepath.Join(dir, "audit.jsonl"), Signer: keyring.AuditSigner{Keyring: b.kr}, Anchors: b.store})
	if err != nil {
		return nil, nil, err
	}
	ethL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	policy, err := authz.Parse(securedPolicy())
	if err != nil {
		al.Close()
		return nil, nil, err
	}
	opts := server.Options{TLS: serverTLS, Authz: authz.Fixed(policy), Audit: al}
	if node != nil {
		opts.Settings = map[string]any{eth.Name: &eth.Settings{Upstream: &eth.Upstream{URL: node.URL}}}
	}
	conn, _, stop, err := b.startServer(b.kr, opts,
		credentials.NewTLS(clientTLS), map[string]net.Listener{"eth": ethL})
	if err != nil {
		al.Close()
		return nil, nil, err
	}
	b.ethRPC = "https://" + ethL.Addr().String()
	b.ethRPCClient = &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS, MaxIdleConnsPerHost: 64}}
	return conn, func() { stop(); al.Close() }, nil
}

// reviewedKey is the eth key an approval rule of the secured server's
// policy covers, with a condition its transactions never meet.
const reviewedKey = "bench-eth-reviewed"

// securedPolicy lets the dev client do everything, as --dev does, and
// has an approval rule on reviewedKey that holds no transaction the bench
// sends (their value is 1 ETH), so every one is reviewed and runs.
func securedPolicy() []byte {
	ops := make([]string, 0, len(authz.Ops()))
	for _, op := range authz.Ops() {
		ops = append(ops, string(op))
	}
	return []byte(fmt.Sprintf(`rules:
  - identity: %[1]s
    keys: ["*"]
    namespaces: ["*"]
    allow: [%[2]s]
approvals:
  - operation: eth.sign_tx
    keys: [%[3]s]
    when: {value_gte: "1000000000000000000000000"}
    approvers: [%[1]s]
    quorum: 1
`, mtls.DevClientIdentity, strings.Join(ops, ", "), reviewedKey))
}

// reviewedTable: SignTransaction on the secured server with a key no
// approval rule covers against one a rule covers whose condition does
// not hold: what reviewing a transaction for dual control costs (parsing
// it again, reading the key and its nonce record) when it runs at once.
func (b *bench) reviewedTable(secured *grpc.ClientConn) ([]row, error) {
	if _, err := b.kr.Create(b.ctx, keyring.CreateSpec{ID: reviewedKey, Purpose: eth.Name, Algorithm: signer.ES256K,
		Policy: &eth.Policy{ChainIDs: []uint64{1}}}); err != nil {
		return nil, err
	}
	ec := sigilv1.NewEthereumServiceClient(secured)
	signTx := func(id string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := ec.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: id, Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: b.nextTx("")}})
			return err
		}
	}
	return b.pair("SignTransaction, reviewed", signTx("bench-eth"), signTx(reviewedKey), []int{1, 16})
}

// ethRPCTable: EIP-1559 eth_signTransaction over the JSON-RPC endpoint
// against SignTransaction over gRPC, both on the secured server (mTLS,
// policy, audit).
func (b *bench) ethRPCTable(secured *grpc.ClientConn) ([]row, error) {
	k, err := b.kr.Get(b.ctx, "bench-eth")
	if err != nil {
		return nil, err
	}
	from := eth.Address(k)
	ec := sigilv1.NewEthereumServiceClient(secured)
	return b.pair("eth_signTransaction", func(ctx context.Context) error {
		_, err := ec.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "bench-eth", Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: b.nextTx("")}})
		return err
	}, func(ctx context.Context) error {
		body := append(append([]byte(`{"jsonrpc":"2.0","id":1,"method":"eth_signTransaction","params":[`), b.nextTx(from)...), "]}"...)
		req, _ := http.NewRequestWithContext(ctx, "POST", b.ethRPC, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := b.ethRPCClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		if err == nil && !bytes.Contains(out, []byte(`"result":"0x`)) {
			err = fmt.Errorf("eth_signTransaction: %s", out)
		}
		return err
	}, []int{1, 16})
}

// securedTable: ES256 Sign on the plain server against the same on the
// secured one.
func (b *bench) securedTable(secured *grpc.ClientConn) ([]row, error) {
	if _, err := b.rawKey(signer.ES256); err != nil {
		return nil, err
	}
	req := &sigilv1.SignRequest{KeyId: "bench-es256", Input: &sigilv1.SignRequest_Digest{Digest: signer.ES256.Input([]byte("x"))}}
	plain, sec := sigilv1.NewSigningServiceClient(b.conn), sigilv1.NewSigningServiceClient(secured)
	return b.pair("Sign, secured", func(ctx context.Context) error {
		_, err := plain.Sign(ctx, req)
		return err
	}, func(ctx context.Context) error {
		_, err := sec.Sign(ctx, req)
		return err
	}, []int{1, 16})
}

// batchTable: 100 ES256 signatures as one SignBatch call on the secured
// server against 100 by the backend in-process, at 16 callers.
func (b *bench) batchTable(secured *grpc.ClientConn) ([]row, error) {
	const id, n = "bench-batch", 100
	if _, err := b.kr.Create(b.ctx, keyring.CreateSpec{ID: id, Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
		return nil, err
	}
	sg, err := b.kr.ForSigning(b.ctx, id, raw.Name)
	if err != nil {
		return nil, err
	}
	in := signer.ES256.Input([]byte("x"))
	req := &sigilv1.SignBatchRequest{}
	for range n {
		req.Items = append(req.Items, &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: in}})
	}
	client := sigilv1.NewSigningServiceClient(secured)
	return b.pair("SignBatch ×100", func(ctx context.Context) error {
		for range n {
			if _, err := b.hsm.Sign(ctx, sg.Generation.Ref, signer.ES256, in); err != nil {
				return err
			}
		}
		return nil
	}, func(ctx context.Context) error {
		resp, err := client.SignBatch(ctx, req)
		for _, r := range resp.GetResults() {
			if e := r.GetError(); e != nil && err == nil {
				err = fmt.Errorf("%s: %s", e.GetCode(), e.GetMessage())
			}
		}
		return err
	}, []int{16})
}

// tracingTable: ES256 Sign on the secured server with tracing off
// against tracing on, exporting over OTLP to a real collector (Jaeger,
// bin/jaeger): sampling 1 %, then 100 %. The tracer provider is the
// process's; each operation names the one its side runs with.
func (b *bench) tracingTable(dir string, secured *grpc.ClientConn) ([]row, error) {
	if jaegertest.Available() != nil {
		fmt.Fprintln(os.Stderr, "jaeger not built (make trace-deps): the tracing table is skipped")
		return nil, nil
	}
	j, stop, err := jaegertest.Run(dir)
	if err != nil {
		return nil, err
	}
	defer stop()
	os.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+j.OTLP)
	os.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	providers := []trace.TracerProvider{nil} // off, 1 %, 100 %
	for _, ratio := range []float64{0.01, 1} {
		tp, err := tracing.NewProvider(b.ctx, tracing.Config{Enabled: true, SampleRatio: ratio}, "bench")
		if err != nil {
			return nil, err
		}
		defer tp.Shutdown(context.Background())
		providers = append(providers, tp)
	}
	defer tracing.Use(nil)
	if _, err := b.rawKey(signer.ES256); err != nil {
		return nil, err
	}
	req := &sigilv1.SignRequest{KeyId: "bench-es256", Input: &sigilv1.SignRequest_Digest{Digest: signer.ES256.Input([]byte("x"))}}
	client := sigilv1.NewSigningServiceClient(secured)
	var using atomic.Int32
	using.Store(-1)
	with := func(i int32) func(context.Context) error {
		return func(ctx context.Context) error {
			if using.Swap(i) != i { // a side's first call: the warm-up absorbs the switch
				tracing.Use(providers[i])
			}
			_, err := client.Sign(ctx, req)
			return err
		}
	}
	rows, err := b.pairN("Sign, tracing 1 %", with(0), with(1), []int{1, 16}, tracingRounds)
	if err != nil {
		return nil, err
	}
	all, err := b.pairN("Sign, tracing 100 %", with(0), with(2), []int{16}, tracingRounds)
	return append(rows, all...), err
}

// tracingRounds: the 1 % cell's target (≥ 0.95) is closer than three
// rounds of 16 callers steady on this VM (0.87 to 0.99 across runs of the
// same build); the median of nine is.
const tracingRounds = 9

// namespaceTable: ES256 Sign in root against the same in a namespace,
// both on the secured server: the namespace costs scoping the request,
// checking the namespace and unscoping the answer.
func (b *bench) namespaceTable(secured *grpc.ClientConn) ([]row, error) {
	const ns = "bench-ns"
	if _, err := sigilv1.NewNamespaceServiceClient(secured).CreateNamespace(b.ctx, &sigilv1.CreateNamespaceRequest{Namespace: ns}); err != nil {
		return nil, err
	}
	inNS := metadata.AppendToOutgoingContext(b.ctx, namespace.Header, ns)
	if _, err := sigilv1.NewKeyServiceClient(secured).CreateKey(inNS, &sigilv1.CreateKeyRequest{Id: "bench-es256", Algorithm: "ES256"}); err != nil {
		return nil, err
	}
	req := &sigilv1.SignRequest{KeyId: "bench-es256", Input: &sigilv1.SignRequest_Digest{Digest: signer.ES256.Input([]byte("x"))}}
	client := sigilv1.NewSigningServiceClient(secured)
	return b.pair("Sign in a namespace", func(ctx context.Context) error {
		_, err := client.Sign(ctx, req)
		return err
	}, func(ctx context.Context) error {
		_, err := client.Sign(metadata.AppendToOutgoingContext(ctx, namespace.Header, ns), req)
		return err
	}, []int{1, 16})
}

// rounds is how many times each cell alternates baseline and subject; the
// median round of each side is reported, so one disturbed round (another
// process, a GC at a bad moment) does not decide a ratio.
const rounds = 3

// pair measures base and subject alternately at each number of callers.
func (b *bench) pair(name string, base, subject func(context.Context) error, cs []int) ([]row, error) {
	return b.pairN(name, base, subject, cs, rounds)
}

// pairN is pair with n rounds.
func (b *bench) pairN(name string, base, subject func(context.Context) error, cs []int, n int) ([]row, error) {
	return b.rounds(name, cs, n, func(c int, subjectFirst bool) (x, y result, err error) {
		return b.round(name, base, subject, c, subjectFirst)
	})
}

// rounds measures each row n times with measure (its odd rounds asked to
// measure the subject first) and reports the median of the rounds'
// ratios.
func (b *bench) rounds(name string, cs []int, n int, measure func(c int, subjectFirst bool) (x, y result, err error)) ([]row, error) {
	var rows []row
	for _, c := range cs {
		var (
			xs, ys []result
			ratios []float64
		)
		for round := range n {
			// Odd rounds measure the subject first: a side that always ran
			// second would carry whatever the first left (a growing audit
			// file, a collection).
			x, y, err := measure(c, round%2 == 1)
			if err != nil {
				return nil, err
			}
			xs, ys = append(xs, x), append(ys, y)
			ratios = append(ratios, y.opsPerSec/x.opsPerSec)
		}
		slices.Sort(ratios)
		r := row{name, c, median(xs), median(ys), ratios[len(ratios)/2]}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "%-14s %2d callers: baseline %8.0f ops/s  sigil %8.0f ops/s  ratio %.2f (rounds %.2f)\n", name, c, r.base.opsPerSec, r.measured.opsPerSec, r.ratio(), ratios)
	}
	return rows, nil
}

// round measures base and subject once each at c callers, the subject
// first if subjectFirst.
func (b *bench) round(name string, base, subject func(context.Context) error, c int, subjectFirst bool) (x, y result, err error) {
	if subjectFirst {
		if y, err = measure(b.ctx, subject, c, b.dur); err != nil {
			return x, y, fmt.Errorf("%s: %w", name, err)
		}
	}
	if x, err = measure(b.ctx, base, c, b.dur); err != nil {
		return x, y, fmt.Errorf("%s baseline: %w", name, err)
	}
	if !subjectFirst {
		if y, err = measure(b.ctx, subject, c, b.dur); err != nil {
			return x, y, fmt.Errorf("%s: %w", name, err)
		}
	}
	return x, y, nil
}

// floor is a gRPC call that does no work, on the same connection.
func (b *bench) floor() ([]result, error) {
	health := healthpb.NewHealthClient(b.conn)
	var out []result
	for _, c := range callers {
		r, err := measure(b.ctx, func(ctx context.Context) error {
			_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, c, b.dur)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// signTable: the backend in-process against Sign through gRPC.
// rawKey is the raw key of alg the tables sign with, bench-<alg>, made
// by the first table that asks for it.
func (b *bench) rawKey(alg signer.Algorithm) (string, error) {
	id := "bench-" + strings.ToLower(string(alg))
	if _, err := b.kr.Get(b.ctx, id); err == nil {
		return id, nil
	}
	_, err := b.kr.Create(b.ctx, keyring.CreateSpec{ID: id, Purpose: raw.Name, Algorithm: alg})
	return id, err
}

func (b *bench) signTable() ([]row, error) {
	client := sigilv1.NewSigningServiceClient(b.conn)
	var rows []row
	for _, alg := range algs {
		id, err := b.rawKey(alg)
		if err != nil {
			return nil, err
		}
		sg, err := b.kr.ForSigning(b.ctx, id, raw.Name)
		if err != nil {
			return nil, err
		}
		msg := make([]byte, 100) // about a JWT signing input
		rand.Read(msg)
		in := alg.Input(msg)
		req := &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: in}}
		if alg == signer.EdDSA {
			req.Input = &sigilv1.SignRequest_Message{Message: in}
		}
		r, err := b.pair(string(alg), func(ctx context.Context) error {
			_, err := b.hsm.Sign(ctx, sg.Generation.Ref, alg, in)
			return err
		}, func(ctx context.Context) error {
			_, err := client.Sign(ctx, req)
			return err
		}, callers)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// jwtTable: Sign against SignJWT, both through gRPC with ES256 keys in the
// same token, so the difference is what building and encoding a JWT costs.
func (b *bench) jwtTable() ([]row, error) {
	if _, err := b.kr.Create(b.ctx, keyring.CreateSpec{ID: "bench-jwt", Purpose: jwt.Name, Algorithm: signer.ES256}); err != nil {
		return nil, err
	}
	if _, err := b.kr.Create(b.ctx, keyring.CreateSpec{ID: "bench-raw-jwt", Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
		return nil, err
	}
	sign, mint := sigilv1.NewSigningServiceClient(b.conn), sigilv1.NewJWTServiceClient(b.conn)
	d := signer.ES256.Input([]byte("about a JWT signing input"))
	claims := []byte(`{"sub":"user-1234","aud":"api.example","scope":"read write","tenant":"t-42"}`)
	return b.pair("SignJWT ES256", func(ctx context.Context) error {
		_, err := sign.Sign(ctx, &sigilv1.SignRequest{KeyId: "bench-raw-jwt", Input: &sigilv1.SignRequest_Digest{Digest: d}})
		return err
	}, func(ctx context.Context) error {
		_, err := mint.SignJWT(ctx, &sigilv1.SignJWTRequest{KeyId: "bench-jwt", ClaimsJson: claims})
		return err
	}, []int{1, 16})
}

// ethTable: Sign with a raw ES256K key against SignTransaction (EIP-1559)
// with an eth key, both through gRPC: what parsing, the policy check, the
// signature finishing (low-S, recovery id) and the encoding cost. The eth
// key has no daily limit, whose ledger write is a disk sync per request.
func (b *bench) ethTable() ([]row, error) {
	if _, err := b.kr.Create(b.ctx, keyring.CreateSpec{ID: "bench-eth", Purpose: eth.Name, Algorithm: signer.ES256K,
		Policy: &eth.Policy{ChainIDs: []uint64{1}}}); err != nil {
		return nil, err
	}
	if _, err := b.kr.Create(b.ctx, keyring.CreateSpec{ID: "bench-raw-k1", Purpose: raw.Name, Algorithm: signer.ES256K}); err != nil {
		return nil, err
	}
	sign, txs := sigilv1.NewSigningServiceClient(b.conn), sigilv1.NewEthereumServiceClient(b.conn)
	d := signer.ES256K.Input([]byte("about a transaction's signing hash"))
	signK1 := func(ctx context.Context) error {
		_, err := sign.Sign(ctx, &sigilv1.SignRequest{KeyId: "bench-raw-k1", Input: &sigilv1.SignRequest_Digest{Digest: d}})
		return err
	}
	rows, err := b.pair("SignTransaction", signK1, func(ctx context.Context) error {
		_, err := txs.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "bench-eth", Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: b.nextTx("")}})
		return err
	}, []int{1, 16})
	if err != nil {
		return nil, err
	}
	many, err := b.manyKeys(b.kr, b.conn, "bench-eth-", "SignTransaction, 16 keys", signK1)
	return append(rows, many...), err
}

// manyKeys measures SignTransaction at 16 callers over 16 keys of kr
// (prefix and a number: their objects share the bench's token with every
// other keyring's), taken in turn, on conn, against base: each key's
// ledger record is its own, so their claims and settles may share a
// store transaction.
func (b *bench) manyKeys(kr *keyring.Keyring, conn *grpc.ClientConn, prefix, name string, base func(context.Context) error) ([]row, error) {
	const keys = 16
	var turn atomic.Uint64
	nonces := make([]atomic.Uint64, keys)
	for i := range keys {
		if _, err := kr.Create(b.ctx, keyring.CreateSpec{ID: fmt.Sprintf("%s%d", prefix, i), Purpose: eth.Name, Algorithm: signer.ES256K,
			Policy: &eth.Policy{ChainIDs: []uint64{1}}}); err != nil {
			return nil, err
		}
	}
	txs := sigilv1.NewEthereumServiceClient(conn)
	return b.pair(name, base, func(ctx context.Context) error {
		i := turn.Add(1) % keys
		tx := fmt.Appendf(nil, `{"chainId":"0x1","nonce":"0x%x","to":"0x3535353535353535353535353535353535353535","value":"0xde0b6b3a7640000","gas":"0x5208","maxFeePerGas":"0x77359400","maxPriorityFeePerGas":"0x3b9aca00"}`, nonces[i].Add(1))
		_, err := txs.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: fmt.Sprintf("%s%d", prefix, i), Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: tx}})
		return err
	}, []int{16})
}

// nextTx is an EIP-1559 transaction of bench-eth with a nonce no earlier
// one had (the nonce guard would answer a repeat from its record), from
// from if set.
func (b *bench) nextTx(from string) []byte {
	n := b.nonce.Add(1)
	f := ""
	if from != "" {
		f = `"from":"` + from + `",`
	}
	return []byte(fmt.Sprintf(`{%s"chainId":"0x1","nonce":"0x%x","to":"0x3535353535353535353535353535353535353535","value":"0xde0b6b3a7640000",`+
		`"gas":"0x5208","maxFeePerGas":"0x77359400","maxPriorityFeePerGas":"0x3b9aca00"}`, f, n))
}

// jwksTable: Sigil's JWKS endpoint against a handler that writes the same
// bytes and headers from a variable, over the same kind of listener.
func (b *bench) jwksTable() ([]row, error) {
	sigilURL := "http://" + b.httpAddr + "/.well-known/jwks.json"
	body, hdr, err := fetch(http.DefaultClient, sigilURL)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	static := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range hdr {
			w.Header()[k] = v
		}
		w.Write(body)
	})}
	go static.Serve(lis)
	defer static.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	get := func(url string) func(context.Context) error {
		return func(context.Context) error { _, _, err := fetch(client, url); return err }
	}
	return b.pair("JWKS GET", get("http://"+lis.Addr().String()+"/"), get(sigilURL), []int{1, 16})
}

func fetch(c *http.Client, url string) ([]byte, http.Header, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, resp.Header, err
}
