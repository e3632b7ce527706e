package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/internal/testutil/crosscheck"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// The identities of the dual-control world: a treasury service that
// asks, two officers who approve, and an operator.
const (
	treasury = "treasury.internal" // a DNS SAN: dns:treasury.internal
	alice    = "spiffe://example.org/officer/alice"
	bob      = "spiffe://example.org/officer/bob"
	ops      = "spiffe://example.org/ops"
)

const dualPolicy = `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: dns:treasury.internal
    keys: ["treasury-*"]
    allow: [eth.sign_tx, eth.sign_message, keys.read]
  - identity: spiffe://example.org/officer/*
    keys: ["treasury-*"]
    allow: [approvals.approve, keys.read]
approvals:
  - operation: eth.sign_tx
    keys: ["treasury-*"]
    when: {value_gte: "1000000000000000000"}
    approvers: [spiffe://example.org/officer/*]
    quorum: 2
  - operation: eth.sign_message
    keys: ["treasury-*"]
    approvers: [spiffe://example.org/officer/*]
    quorum: 1
    expires: 2s
  - operation: keys.admin
    keys: ["treasury-*"]
    actions: [revoke]
    approvers: [spiffe://example.org/officer/*]
    quorum: 2
`

// dualWorld is replicas of `sigil serve --config` over one etcd and one
// SoftHSM token, with client certificates for each identity.
type dualWorld struct {
	t        *testing.T
	bin, dir string
	cfgs     []string
	procs    []*framework.Proc
	hsmConf  string
	creds    map[string][3]string // cert, key, CA
	etcd     []string             // the store's endpoints
}

// newDualWorld starts the replicas; extra is added to each one's
// configuration.
func newDualWorld(t *testing.T, replicas int, extra ...string) *dualWorld {
	framework.RequireTools(t)
	w := &dualWorld{t: t, bin: framework.Build(t), dir: t.TempDir(), creds: map[string][3]string{}}
	cluster := etcdtest.Start(t, 1)
	w.etcd = cluster.Endpoints
	conf, err := softhsm.WriteConf(filepath.Join(w.dir, "hsm"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := softhsm.InitToken(conf, filepath.Join(w.dir, "hsm"), "dual")
	if err != nil {
		t.Fatal(err)
	}
	w.hsmConf = conf
	ca := servertest.NewCA(t)
	files := ca.WriteFiles(t, w.dir)
	for _, id := range []string{treasury, alice, bob, ops} {
		d := filepath.Join(w.dir, "client-"+regexp.MustCompile(`[^a-z]`).ReplaceAllString(id, "_"))
		os.Mkdir(d, 0o700)
		c, k, a := ca.WriteClient(t, d, id)
		w.creds[id] = [3]string{c, k, a}
	}
	policy := filepath.Join(w.dir, "policy.yaml")
	os.WriteFile(policy, []byte(dualPolicy), 0o600)
	for i := range replicas {
		cfg := filepath.Join(w.dir, fmt.Sprintf("r%d.yaml", i))
		os.WriteFile(cfg, []byte(fmt.Sprintf(`grpc: {addr: "127.0.0.1:0", tls: {cert: %s, key: %s, client_ca: %s}}
http: {public_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0"}
store: {type: etcd, endpoints: [%s], prefix: /sigil-dual/}
audit: {path: %s, replica: r%d}
policy: %s
approvals: {run_lease: 4s, sweep_interval: 300ms}
backends:
  hsm: {type: pkcs11, module: %s, token: dual, pin: "file:%s"}
%s`, files.Cert, files.Key, files.ClientCA, cluster.Endpoints[0], w.auditLog(i), i, policy, softhsm.Module, tok.PINFile, strings.Join(extra, "\n"))), 0o600)
		w.cfgs = append(w.cfgs, cfg)
		w.procs = append(w.procs, nil)
		w.start(i, "")
	}
	return w
}

func (w *dualWorld) auditLog(i int) string {
	return filepath.Join(w.dir, fmt.Sprintf("audit%d.jsonl", i))
}

// start runs replica i, with failpoint fp armed unless it is "".
func (w *dualWorld) start(i int, fp string) {
	env := []string{softhsm.ConfEnv + "=" + w.hsmConf}
	if fp != "" {
		env = append(env, "SIGIL_FAILPOINT="+fp)
	}
	w.procs[i] = framework.ServeConfig(w.t, w.bin, w.cfgs[i], env...)
}

// as runs a client command as identity who against replica i.
func (w *dualWorld) as(who string, i int, args ...string) (string, error) {
	c := w.creds[who]
	out, err := exec.Command(w.bin, append(args, "--addr", w.procs[i].GRPCAddr, "--tls-cert", c[0], "--tls-key", c[1], "--tls-ca", c[2])...).CombinedOutput()
	return string(out), err
}

func (w *dualWorld) must(who string, i int, args ...string) string {
	w.t.Helper()
	out, err := w.as(who, i, args...)
	if err != nil {
		w.t.Fatalf("%s: sigil %v: %v\n%s", who, args, err, out)
	}
	return out
}

var heldRE = regexp.MustCompile(`approval required: request ([0-9a-f]{32}) waits`)

// held runs a command that an approval rule must hold and returns the
// approval ID its error names.
func (w *dualWorld) held(who string, i int, args ...string) string {
	w.t.Helper()
	out, err := w.as(who, i, args...)
	m := heldRE.FindStringSubmatch(out)
	if err == nil || m == nil || !strings.Contains(out, "FailedPrecondition") {
		w.t.Fatalf("sigil %v was not held: %v\n%s", args, err, out)
	}
	return m[1]
}

// fails runs a command that must fail with an output containing want.
func (w *dualWorld) fails(who string, i int, want string, args ...string) {
	w.t.Helper()
	if out, err := w.as(who, i, args...); err == nil || !strings.Contains(out, want) {
		w.t.Fatalf("%s: sigil %v: want a failure with %q, got %v\n%s", who, args, want, err, out)
	}
}

// runs are the audit records, across replicas, of held request id run.
func (w *dualWorld) runs(id string) []audit.Record {
	var out []audit.Record
	for i := range w.cfgs {
		f, err := os.Open(w.auditLog(i))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r audit.Record
			if json.Unmarshal(sc.Bytes(), &r) == nil && r.ApprovalID == id && len(r.ApprovedBy) > 0 {
				out = append(out, r)
			}
		}
		f.Close()
	}
	return out
}

func txJSON(nonce int, value string) string {
	return fmt.Sprintf(`{"chainId":"0x1","nonce":"0x%x","to":"0x3535353535353535353535353535353535353535","value":"%s","gas":"0x5208","maxFeePerGas":"0x3b9aca00","maxPriorityFeePerGas":"0x1"}`, nonce, value)
}

const twoETH = "0x1bc16d674ec80000"

// ethersFrom is the sender ethers recovers from a raw transaction.
func ethersFrom(t *testing.T, raw string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "in.json")
	os.WriteFile(file, []byte(fmt.Sprintf(`{"txs":[%q]}`, raw)), 0o600)
	var got struct{ Txs []struct{ From string } }
	if err := json.Unmarshal(crosscheck.Run(t, "verify-eth.mjs", file), &got); err != nil || len(got.Txs) != 1 {
		t.Fatalf("ethers: %v %+v", err, got)
	}
	return got.Txs[0].From
}

// newTreasuryKey makes eth key treasury-1 and returns its address.
func (w *dualWorld) newTreasuryKey() string {
	var k struct{ Generations []struct{ Address string } }
	out := w.must(ops, 0, "keys", "create", "treasury-1", "--alg", "ES256K", "--purpose", "eth", "--chain-ids", "1", "--max-value", "5000000000000000000", "--json")
	if err := json.Unmarshal([]byte(out), &k); err != nil || len(k.Generations) != 1 {
		w.t.Fatalf("keys create: %v %s", err, out)
	}
	w.seen("treasury-1")
	return k.Generations[0].Address
}

// seen waits until every replica knows key id (the others learn of a new
// key through etcd's watch).
func (w *dualWorld) seen(id string) {
	w.t.Helper()
	for i := range w.procs {
		if !withinE(5*time.Second, func() bool { _, err := w.as(ops, i, "keys", "get", id); return err == nil }) {
			w.t.Fatalf("replica %d does not see key %s", i, id)
		}
	}
}

// Dual control end to end, on two replicas over etcd: a high-value
// transaction held on one replica, approved on both, runs once and
// verifies with ethers; a revocation leaves the key untouched until its
// quorum; denied and expired requests never run.
func TestDualControlAcrossReplicas(t *testing.T) {
	crosscheck.Require(t)
	w := newDualWorld(t, 2)
	addr := w.newTreasuryKey()
	if out := w.must(treasury, 0, "eth", "sign-tx", "--key", "treasury-1", "--tx", txJSON(0, "0x1")); !strings.HasPrefix(out, "0x02") {
		t.Fatalf("a small transaction: %s", out)
	}
	id := w.held(treasury, 0, "eth", "sign-tx", "--key", "treasury-1", "--tx", txJSON(1, twoETH))
	show := w.must(alice, 1, "approvals", "show", id)
	for _, want := range []string{"2 ETH (2000000000000000000 wei)", "0x3535353535353535353535353535353535353535", "PENDING", "approvals 0 of 2", "request (sigil.v1.SignTransactionRequest): "} {
		if !strings.Contains(show, want) {
			t.Fatalf("show lacks %q:\n%s", want, show)
		}
	}
	w.fails(treasury, 1, "PermissionDenied", "approvals", "approve", id)
	if out := w.must(alice, 1, "approvals", "approve", id, "--json"); !strings.Contains(out, `"state": "pending"`) {
		t.Fatalf("one approval: %s", out)
	}
	w.fails(alice, 0, "AlreadyExists", "approvals", "approve", id)
	w.fails(treasury, 1, "waits for 1 more approval", "approvals", "result", id)
	if len(w.runs(id)) != 0 {
		t.Fatal("ran before its quorum")
	}

	// The quorum's approval on replica 0 while the requester polls for
	// the result on both replicas: it runs once.
	var wg sync.WaitGroup
	results := make([]string, 4)
	for i := range results {
		wg.Go(func() {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if out, err := w.as(treasury, i%2, "approvals", "result", id); err == nil {
					results[i] = strings.TrimSpace(out)
					return
				}
			}
		})
	}
	w.must(bob, 0, "approvals", "approve", id)
	wg.Wait()
	for i, r := range results {
		if r == "" || r != results[0] {
			t.Fatalf("result %d: %q, want %q", i, r, results[0])
		}
	}
	if from := ethersFrom(t, results[0]); !strings.EqualFold(from, addr) {
		t.Fatalf("ethers recovers %s, the key is %s", from, addr)
	}
	if runs := w.runs(id); len(runs) != 1 || runs[0].Method != sigilv1.EthereumService_SignTransaction_FullMethodName ||
		runs[0].Identity != "dns:"+treasury || runs[0].Outcome != "allowed" {
		t.Fatalf("runs of the approved transaction across replicas: %+v", runs)
	}

	// A revocation waits for its quorum; the key is untouched before it.
	w.must(ops, 0, "keys", "create", "treasury-raw", "--alg", "ES256")
	w.seen("treasury-raw")
	rid := w.held(ops, 0, "keys", "revoke", "treasury-raw", "--generation", "1")
	w.must(alice, 1, "approvals", "approve", rid)
	if out := w.must(ops, 1, "keys", "get", "treasury-raw"); !strings.Contains(out, "generation 1  active") {
		t.Fatalf("one approval changed the key:\n%s", out)
	}
	w.must(bob, 1, "approvals", "approve", rid)
	if out := w.must(ops, 0, "keys", "get", "treasury-raw"); !strings.Contains(out, "generation 1  revoked") {
		t.Fatalf("the approved revocation did not run:\n%s", out)
	}

	// Denied: never runs, cannot be approved after.
	did := w.held(treasury, 1, "eth", "sign-tx", "--key", "treasury-1", "--tx", txJSON(2, twoETH))
	w.must(alice, 0, "approvals", "deny", did, "--reason", "unknown counterparty")
	w.fails(bob, 1, "FailedPrecondition", "approvals", "approve", did)
	w.fails(treasury, 0, "denied by "+alice+": unknown counterparty", "approvals", "result", did)

	// Expired (the message rule waits 2s): never runs.
	eid := w.held(treasury, 0, "eth", "sign-message", "--key", "treasury-1", "--message", "hello")
	time.Sleep(2100 * time.Millisecond)
	w.fails(alice, 1, "expired", "approvals", "approve", eid)
	w.fails(treasury, 1, "expired", "approvals", "result", eid)
	if len(w.runs(did))+len(w.runs(eid)) != 0 {
		t.Fatal("a denied or expired request ran")
	}
	if out := w.must(alice, 0, "approvals", "list", "--json"); strings.Count(out, `"approval_id"`) != 4 {
		t.Fatalf("the officer's list: %s", out)
	}
}

// kill -9 of the replica running an approved request, at each step
// (quorum recorded, claim taken, run done but unrecorded): the other
// replica runs it (after the lapsed claim), and the transaction is the
// nonce's only one.
func TestApprovedRequestSurvivesKill9(t *testing.T) {
	for _, fp := range []string{"approval.after-quorum", "approval.after-claim", "approval.after-run"} {
		t.Run(fp, func(t *testing.T) {
			w := newDualWorld(t, 2)
			addr := w.newTreasuryKey()
			id := w.held(treasury, 1, "eth", "sign-tx", "--key", "treasury-1", "--tx", txJSON(0, twoETH))
			w.must(alice, 1, "approvals", "approve", id)
			w.procs[0].Kill()
			w.start(0, fp)
			// The other replica is down while the quorum is reached: its
			// sweep would otherwise take the request a loaded machine's
			// moment before the replica recording the quorum runs it.
			w.procs[1].Kill()
			if out, err := w.as(bob, 0, "approvals", "approve", id); err == nil {
				t.Fatalf("the failpoint did not fire: %s", out)
			}
			w.procs[0].Died(t, 5*time.Second)
			w.start(1, "")
			out, err := w.as(treasury, 1, "approvals", "result", id, "--wait", "20s")
			if err != nil {
				t.Fatalf("no result within 20s of the crash: %v %s\n%s", err, out, w.procs[1].Logs.String())
			}
			raw := strings.TrimSpace(out)
			w.start(0, "")
			if out := strings.TrimSpace(w.must(treasury, 0, "approvals", "result", id)); out != raw {
				t.Fatalf("the restarted replica answers %s, the other %s", out, raw)
			}
			if from := ethersFrom(t, raw); !strings.EqualFold(from, addr) {
				t.Fatalf("ethers recovers %s, the key is %s", from, addr)
			}
			runs := w.runs(id)
			want := 1
			if fp == "approval.after-run" {
				want = 2 // the dead replica's run, then the other's, which the nonce guard answers with the same bytes
			}
			if len(runs) != want {
				t.Fatalf("%d runs recorded, want %d: %+v", len(runs), want, runs)
			}
			// The nonce is spent: a different transaction for it is refused.
			w.fails(treasury, 1, "nonce 0 on chain 1 was signed", "eth", "sign-tx", "--key", "treasury-1", "--tx", txJSON(0, "0x2"))
		})
	}
}
