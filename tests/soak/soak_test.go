//go:build soak

// Package soak_test runs Sigil under mixed concurrent load for minutes, with
// faults in the middle, and checks what must hold on a busy machine: no data
// race, no unexpected answer, every key signing, the token holding exactly
// the generations the keyring records. `make soak` runs it (not make test).
package soak_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-hsm/sigil/client"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
	"github.com/sigil-hsm/sigil/tests/framework"
)

const (
	opsID     = "spiffe://soak.test/ops"
	officerID = "spiffe://soak.test/officer"
)

const policy = `
rules:
  - identity: spiffe://soak.test/ops
    keys: ["*"]
    allow: [keys.admin, keys.read, sign.raw, sign.jwt, eth.sign_tx]
  - identity: spiffe://soak.test/officer
    keys: ["*"]
    allow: [approvals.approve, keys.read]
approvals:
  - operation: eth.sign_tx
    keys: ["held-*"]
    when: {value_gte: "1000"}
    approvers: [spiffe://soak.test/officer]
    quorum: 1
`

func duration(t *testing.T) time.Duration {
	d := 5 * time.Minute
	if v := os.Getenv("SIGIL_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("SIGIL_SOAK_DURATION: %v", err)
		}
	}
	return d
}

func TestSoak(t *testing.T) {
	framework.RequireTools(t, "pkcs11-tool")
	bin := framework.BuildRace(t)
	d := duration(t)
	t.Run("bbolt", func(t *testing.T) { newWorld(t, bin, 1).soak(t, d) })
	t.Run("etcd-3-replicas", func(t *testing.T) { newWorld(t, bin, 3).soak(t, d) })
}

// world is n replicas (one over bbolt, or n over a 3-member etcd) sharing
// one SoftHSM token, with an operator's and an officer's certificates.
type world struct {
	dir, hsmDir, conf, pinFile, token string
	cluster                           *etcdtest.Cluster
	procs                             []*framework.Proc
	ops, officer                      []*client.Client // one per replica
}

func newWorld(t *testing.T, bin string, n int) *world {
	w := &world{dir: t.TempDir(), token: "soak"}
	w.hsmDir = filepath.Join(w.dir, "hsm")
	var err error
	if w.conf, err = softhsm.WriteConf(w.hsmDir); err != nil {
		t.Fatal(err)
	}
	tok, err := softhsm.InitToken(w.conf, w.hsmDir, w.token)
	if err != nil {
		t.Fatal(err)
	}
	w.pinFile = tok.PINFile
	ca := servertest.NewCA(t)
	files := ca.WriteFiles(t, w.dir)
	creds := map[string][3]string{}
	for _, id := range []string{opsID, officerID} {
		d := filepath.Join(w.dir, "client-"+filepath.Base(id))
		os.Mkdir(d, 0o700)
		c, k, a := ca.WriteClient(t, d, id)
		creds[id] = [3]string{c, k, a}
	}
	pol := filepath.Join(w.dir, "policy.yaml")
	os.WriteFile(pol, []byte(policy), 0o600)
	store := fmt.Sprintf("{type: bbolt, path: %s}", filepath.Join(w.dir, "keyring.db"))
	if n > 1 {
		w.cluster = etcdtest.Start(t, 3)
		store = fmt.Sprintf("{type: etcd, endpoints: [%s], prefix: /soak/}", strings.Join(w.cluster.Endpoints, ", "))
	}
	for i := range n {
		cfg := filepath.Join(w.dir, fmt.Sprintf("r%d.yaml", i))
		os.WriteFile(cfg, []byte(fmt.Sprintf(`grpc: {addr: "127.0.0.1:0", tls: {cert: %s, key: %s, client_ca: %s}}
http: {public_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0"}
store: %s
audit: {path: %s, replica: r%d}
policy: %s
approvals: {run_lease: 4s, sweep_interval: 500ms}
keyring: {sweep_interval: 2s, orphan_grace: 10s, creating_grace: 30s}
backends:
  hsm: {type: pkcs11, module: %s, token: %s, pin: "file:%s", health_interval: 500ms}
`, files.Cert, files.Key, files.ClientCA, store, filepath.Join(w.dir, fmt.Sprintf("audit%d.jsonl", i)), i, pol, softhsm.Module, w.token, w.pinFile)), 0o600)
		p := framework.ServeConfig(t, bin, cfg, softhsm.ConfEnv+"="+w.conf)
		w.procs = append(w.procs, p)
		for id, dst := range map[string]*[]*client.Client{opsID: &w.ops, officerID: &w.officer} {
			c, err := client.Dial(context.Background(), client.Options{Addr: p.GRPCAddr, CertFile: creds[id][0], KeyFile: creds[id][1], CAFile: creds[id][2], Retries: -1, Timeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			*dst = append(*dst, c)
		}
	}
	return w
}

// faults is when the faults are on (plus the time to heal after each):
// only then may an answer be Unavailable.
type faults struct {
	mu      sync.Mutex
	windows [][2]time.Time
}

func (f *faults) add(from, to time.Time) {
	f.mu.Lock()
	f.windows = append(f.windows, [2]time.Time{from, to})
	f.mu.Unlock()
}

func (f *faults) during(start, end time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.windows {
		if !end.Before(w[0]) && (w[1].IsZero() || !start.After(w[1])) {
			return true
		}
	}
	return false
}

// healTime is how long after a fault ends answers may still say it.
const healTime = 15 * time.Second

// tally counts answers by operation and code, keeping the unexpected ones.
type tally struct {
	mu         sync.Mutex
	counts     map[string]int
	unexpected []string
}

func (c *tally) note(op string, code codes.Code, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[op+" "+code.String()]++
	if !ok && len(c.unexpected) < 50 {
		c.unexpected = append(c.unexpected, fmt.Sprintf("%s: %v", op, err))
	}
}

func (w *world) soak(t *testing.T, d time.Duration) {
	ctx := context.Background()
	admin := w.ops[0]
	hour := durationpb.New(20 * time.Second)
	mustCreate := func(req *sigilv1.CreateKeyRequest) {
		if _, err := admin.Keys.CreateKey(ctx, req); err != nil {
			t.Fatalf("create %s: %v", req.Id, err)
		}
	}
	jwtPolicy := func() *sigilv1.JWTPolicy {
		return &sigilv1.JWTPolicy{RotateEvery: hour, PublishAhead: durationpb.New(5 * time.Second), MaxTokenTtl: durationpb.New(3 * time.Second), Skew: durationpb.New(time.Second)}
	}
	for i := range 3 {
		mustCreate(&sigilv1.CreateKeyRequest{Id: fmt.Sprintf("raw-%d", i), Algorithm: "ES256"})
		mustCreate(&sigilv1.CreateKeyRequest{Id: fmt.Sprintf("jwt-%d", i), Algorithm: "ES256", Purpose: "jwt", JwtPolicy: jwtPolicy()})
		mustCreate(&sigilv1.CreateKeyRequest{Id: fmt.Sprintf("eth-%d", i), Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})
	}
	mustCreate(&sigilv1.CreateKeyRequest{Id: "toggle-0", Algorithm: "ES256"})
	mustCreate(&sigilv1.CreateKeyRequest{Id: "held-0", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})
	for i, c := range w.ops { // every replica sees every key before the load starts
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, err := c.Keys.GetKey(ctx, &sigilv1.GetKeyRequest{Id: "held-0"}); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("replica %d does not see the keys: %v", i, err)
			}
		}
	}

	var f faults
	res := &tally{counts: map[string]int{}}
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	var rr atomic.Uint64
	pick := func(cs []*client.Client) *client.Client { return cs[rr.Add(1)%uint64(len(cs))] }
	// call runs one request and judges its answer: OK, or one of the codes
	// the operation may give, or Unavailable while a fault is on.
	call := func(op string, fn func(context.Context) error, also ...codes.Code) error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		start := time.Now()
		err := fn(cctx)
		code := status.Code(err)
		ok := code == codes.OK || slices.Contains(also, code) ||
			code == codes.Unavailable && f.during(start, time.Now())
		res.note(op, code, ok, err)
		return err
	}
	loop := func(fn func()) {
		wg.Go(func() {
			for time.Now().Before(stop) {
				fn()
			}
		})
	}
	for i := range 2 {
		loop(func() {
			c := pick(w.ops)
			call("Sign", func(ctx context.Context) error {
				_, err := c.Signing.Sign(ctx, &sigilv1.SignRequest{KeyId: fmt.Sprintf("raw-%d", i), Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
				return err
			})
		})
		loop(func() {
			c := pick(w.ops)
			call("SignJWT", func(ctx context.Context) error {
				_, err := c.JWT.SignJWT(ctx, &sigilv1.SignJWTRequest{KeyId: fmt.Sprintf("jwt-%d", i), ClaimsJson: []byte(`{"sub":"soak"}`)})
				return err
			})
		})
	}
	for i := range 2 { // each worker its own key and nonces; a failed nonce is retried as is
		key, nonce := fmt.Sprintf("eth-%d", i), 0
		loop(func() {
			c := pick(w.ops)
			err := call("SignTransaction", func(ctx context.Context) error {
				_, err := c.Eth.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: key, Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(txJSON(nonce, "0x1"))}})
				return err
			}, codes.Aborted) // a retry while the first claim of its nonce is in flight
			if err == nil {
				nonce++
			}
		})
	}
	loop(func() { // signing on a key that is disabled and enabled meanwhile
		c := pick(w.ops)
		call("Sign toggled", func(ctx context.Context) error {
			_, err := c.Signing.Sign(ctx, &sigilv1.SignRequest{KeyId: "toggle-0", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
			return err
		}, codes.FailedPrecondition)
	})
	created := 0
	loop(func() { // the operator: create, rotate, rotate --now, revoke, disable, enable
		c := w.ops[0]
		id := fmt.Sprintf("made-%d", created)
		purpose, pol := "raw", (*sigilv1.JWTPolicy)(nil)
		if created%2 == 1 {
			purpose, pol = "jwt", jwtPolicy()
		}
		created++ // a fresh ID each time: one that failed is rolled back, not retried here
		call("CreateKey", func(ctx context.Context) error {
			_, err := c.Keys.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256", Purpose: purpose, JwtPolicy: pol})
			return err
		})
		for i := range 3 {
			call("RotateKey", func(ctx context.Context) error {
				_, err := c.Keys.RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: fmt.Sprintf("raw-%d", i)})
				return err
			})
		}
		call("RotateKey --now", func(ctx context.Context) error {
			_, err := c.Keys.RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: "jwt-2", Immediate: true})
			return err
		})
		call("RevokeGeneration", func(ctx context.Context) error {
			k, err := c.Keys.GetKey(ctx, &sigilv1.GetKeyRequest{Id: "jwt-1"})
			if err != nil {
				return err
			}
			for _, g := range k.GetKey().GetGenerations() {
				if g.State == "active" {
					_, err = c.Keys.RevokeGeneration(ctx, &sigilv1.RevokeGenerationRequest{Id: "jwt-1", Generation: g.Generation})
				}
			}
			return err
		})
		call("DisableKey", func(ctx context.Context) error {
			_, err := c.Keys.DisableKey(ctx, &sigilv1.DisableKeyRequest{Id: "toggle-0"})
			return err
		})
		time.Sleep(100 * time.Millisecond)
		call("EnableKey", func(ctx context.Context) error {
			_, err := c.Keys.EnableKey(ctx, &sigilv1.EnableKeyRequest{Id: "toggle-0"})
			return err
		})
		time.Sleep(500 * time.Millisecond)
	})
	heldNonce := 0
	loop(func() { // a treasury payment held for an officer's approval, then run
		c, officer := pick(w.ops), pick(w.officer)
		var id string
		err := call("SignTransaction held", func(ctx context.Context) error {
			_, err := c.Eth.SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "held-0", Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(txJSON(heldNonce, "0x7d0"))}})
			if held, ok := client.HeldFor(err); ok {
				id = held
				return nil
			}
			return err
		})
		if err != nil || id == "" {
			return
		}
		if call("Approve", func(ctx context.Context) error { _, err := officer.Approve(ctx, id, ""); return err }) != nil {
			return
		}
		if err := call("AwaitApprovalResult", func(ctx context.Context) error {
			_, err := c.AwaitApprovalResult(ctx, id, 100*time.Millisecond)
			return err
		}); err == nil {
			heldNonce++
		} else if a, gerr := sigilv1.NewApprovalServiceClient(c.Conn()).GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id}); gerr == nil {
			t.Logf("held request %s after %v: %v", id, err, a.GetApproval())
		}
	})

	// The faults, in the middle: a token blip, then (over etcd) a member
	// restart.
	time.Sleep(d / 3)
	w.tokenBlip(t, &f)
	if w.cluster != nil {
		time.Sleep(d / 6)
		w.etcdRestart(t, &f)
	}
	wg.Wait()

	w.report(t, res)
	w.checkEnd(t)
}

// tokenBlip moves the token's storage away for 8 s.
func (w *world) tokenBlip(t *testing.T, f *faults) {
	dir, err := softhsm.TokenDir(w.hsmDir, w.token)
	if err != nil {
		t.Fatal(err)
	}
	aside := filepath.Join(w.dir, "aside")
	from := time.Now()
	f.add(from, time.Time{})
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second)
	if err := os.Rename(aside, dir); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.windows[len(f.windows)-1][1] = time.Now().Add(healTime)
	f.mu.Unlock()
	t.Logf("token away for 8 s at %v", from.Format(time.TimeOnly))
}

// etcdRestart stops the leading etcd member for 5 s.
func (w *world) etcdRestart(t *testing.T, f *faults) {
	i := w.cluster.Leader()
	if i < 0 {
		i = 0
	}
	from := time.Now()
	f.add(from, time.Time{})
	w.cluster.Kill(i)
	time.Sleep(5 * time.Second)
	if err := w.cluster.Restart(i); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.windows[len(f.windows)-1][1] = time.Now().Add(healTime)
	f.mu.Unlock()
	t.Logf("etcd member %d (the leader) down for 5 s at %v", i, from.Format(time.TimeOnly))
}

func (w *world) report(t *testing.T, res *tally) {
	var lines []string
	for k, n := range res.counts {
		lines = append(lines, fmt.Sprintf("%-28s %d", k, n))
	}
	sort.Strings(lines)
	t.Logf("answers:\n%s", strings.Join(lines, "\n"))
	if len(res.unexpected) > 0 {
		t.Errorf("%d+ unexpected answers:\n%s", len(res.unexpected), strings.Join(res.unexpected, "\n"))
		for i, p := range w.procs {
			var warn []string
			for _, l := range strings.Split(p.Logs.String(), "\n") {
				if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
					warn = append(warn, l)
				}
			}
			warn = warn[max(0, len(warn)-40):] // the last ones: what did not heal
			t.Logf("replica %d warnings:\n%s", i, strings.Join(warn, "\n"))
		}
	}
	for i, p := range w.procs {
		logs := p.Logs.String()
		if strings.Contains(logs, "WARNING: DATA RACE") || strings.Contains(logs, "panic:") {
			t.Errorf("replica %d raced or panicked:\n%s", i, logs)
		}
	}
}

// checkEnd: every key has an active generation, and the token holds
// exactly the generations the keyring records (none lost, none left over),
// once the last steps in flight settled.
func (w *world) checkEnd(t *testing.T) {
	ctx := context.Background()
	var diff string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		recorded, err := w.recorded(ctx)
		if err != nil {
			t.Fatal(err)
		}
		inToken := w.tokenLabels(t)
		diff = ""
		for name := range recorded {
			if !inToken[name] {
				diff += "recorded, not in the token: " + name + "\n"
			}
		}
		for name := range inToken {
			if !recorded[name] {
				diff += "in the token, not recorded: " + name + "\n"
			}
		}
		if diff == "" {
			t.Logf("token objects = recorded generations: %d", len(recorded))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the token and the keyring disagree:\n%s", diff)
		}
	}
	keys, err := w.ops[0].Keys.ListKeys(ctx, &sigilv1.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys.GetKeys() {
		if !slices.ContainsFunc(k.GetGenerations(), func(g *sigilv1.Generation) bool { return g.State == "active" }) {
			t.Errorf("key %s has no active generation: %v", k.Id, k.GetGenerations())
		}
	}
}

// recorded is the name of every generation the keyring records whose key
// pair must exist.
func (w *world) recorded(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	var page string
	for {
		resp, err := w.ops[0].Keys.ListKeys(ctx, &sigilv1.ListKeysRequest{PageToken: page})
		if err != nil {
			return nil, err
		}
		for _, k := range resp.GetKeys() {
			for _, g := range k.GetGenerations() {
				if g.State != "destroyed" {
					out[fmt.Sprintf("%s.g%d", k.Id, g.Generation)] = true
				}
			}
		}
		if page = resp.GetNextPageToken(); page == "" {
			break
		}
	}
	// Sigil's own audit key is not listed to clients; its generation is
	// in the token.
	out["sigil.audit.g1"] = true
	return out, nil
}

var labelLine = regexp.MustCompile(`(?m)^\s*label:\s*(\S+\.g\d+)\s*$`)

// tokenLabels lists the private keys in the token, by label.
func (w *world) tokenLabels(t *testing.T) map[string]bool {
	pin, _ := os.ReadFile(w.pinFile)
	cmd := exec.Command("pkcs11-tool", "--module", softhsm.Module, "--token-label", w.token, "--login", "--pin", strings.TrimSpace(string(pin)), "--list-objects", "--type", "privkey")
	cmd.Env = append(os.Environ(), softhsm.ConfEnv+"="+w.conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool: %v\n%s", err, out)
	}
	labels := map[string]bool{}
	for _, m := range labelLine.FindAllStringSubmatch(string(out), -1) {
		labels[m[1]] = true
	}
	return labels
}

func txJSON(nonce int, value string) string {
	return fmt.Sprintf(`{"chainId":"0x1","nonce":"0x%x","to":"0x3535353535353535353535353535353535353535","value":"%s","gas":"0x5208","maxFeePerGas":"0x3b9aca00","maxPriorityFeePerGas":"0x1"}`, nonce, value)
}
