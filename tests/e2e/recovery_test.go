package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-hsm/sigil/internal/failpoint"
	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/internal/testutil/gethtest"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// recoveryEnv is a production-shaped server (its PKI from sigil pki, a
// SoftHSM token, bbolt, geth --dev behind its JSON-RPC endpoint) whose
// store a test destroys and brings back.
type recoveryEnv struct {
	t        *testing.T
	bin, dir string
	cfg      string
	conf     string // SOFTHSM2_CONF
	node     *gethtest.Node
	srv      *framework.Proc
	etcd     *etcdtest.Cluster // the store, if not bbolt
}

// etcdPrefix is where an etcd recoveryEnv keeps its keyring.
const etcdPrefix = "/dr/"

// newRecoveryEnv makes the world with a bbolt store, or with etcd an
// embedded etcd's.
func newRecoveryEnv(t *testing.T, etcd bool) *recoveryEnv {
	framework.RequireTools(t, "openssl")
	e := &recoveryEnv{t: t, bin: framework.Build(t), dir: t.TempDir(), node: gethtest.Start(t)}
	store := fmt.Sprintf("{type: bbolt, path: %s/keyring.db}", e.dir)
	if etcd {
		e.etcd = etcdtest.Start(t, 1)
		store = fmt.Sprintf("{type: etcd, endpoints: [%s], prefix: %s}", e.etcd.Endpoints[0], etcdPrefix)
	}
	audit := fmt.Sprintf("{path: %s/audit.jsonl, replica: r1}", e.dir)
	var err error
	if e.conf, err = softhsm.WriteConf(e.dir); err != nil {
		t.Fatal(err)
	}
	tok, err := softhsm.InitToken(e.conf, e.dir, "dr")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(e.dir, "policy.yaml"), []byte(`rules:
  - identity: spiffe://example.org/admin
    keys: ["*"]
    allow: [keys.admin, keys.read, sign.raw, sign.jwt, eth.sign_tx, store.backup]
  - identity: spiffe://example.org/admin
    keys: ["*"]
    namespaces: ["*"]
    allow: [ns.admin, keys.admin, keys.read, sign.raw]
`), 0o600)
	e.cfg = filepath.Join(e.dir, "sigil.yaml")
	os.WriteFile(e.cfg, []byte(fmt.Sprintf(`grpc:
  addr: 127.0.0.1:0
  tls: {cert: %[1]s/tls/server.crt, key: %[1]s/tls/server.key, client_ca: %[1]s/tls/ca.crt}
http: {public_addr: 127.0.0.1:0, admin_addr: 127.0.0.1:0}
ethrpc:
  addr: 127.0.0.1:0
  upstream: {url: %[2]s}
store: %[5]s
backends:
  hsm: {type: pkcs11, module: %[3]s, token: dr, pin: file:%[4]s}
policy: %[1]s/policy.yaml
audit: %[6]s
`, e.dir, e.node.URL, softhsm.Module, tok.PINFile, store, audit)), 0o600)
	e.must("pki", "init", "--config", e.cfg, "--out", filepath.Join(e.dir, "tls", "ca.crt"))
	e.must("pki", "issue", "--config", e.cfg, "--server", "127.0.0.1", "--out-dir", filepath.Join(e.dir, "tls"))
	e.must("pki", "issue", "--config", e.cfg, "--client", "spiffe://example.org/admin", "--out-dir", filepath.Join(e.dir, "admin"))
	return e
}

func (e *recoveryEnv) run(args ...string) (string, error) {
	return e.runEnv(nil, args...)
}

// runEnv runs sigil with env added to its environment.
func (e *recoveryEnv) runEnv(env []string, args ...string) (string, error) {
	cmd := exec.Command(e.bin, args...)
	cmd.Dir = e.dir
	cmd.Env = append(append(os.Environ(), softhsm.ConfEnv+"="+e.conf), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// destroyStore is the disaster: the keyring store is gone.
func (e *recoveryEnv) destroyStore() {
	e.t.Helper()
	if e.etcd == nil {
		os.Remove(filepath.Join(e.dir, "keyring.db"))
		return
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.etcd.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Delete(context.Background(), etcdPrefix, clientv3.WithPrefix()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *recoveryEnv) must(args ...string) string {
	e.t.Helper()
	out, err := e.run(args...)
	if err != nil {
		e.t.Fatalf("sigil %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *recoveryEnv) start() {
	e.srv = framework.Serve(e.t, e.bin, []string{"--config", e.cfg}, []string{softhsm.ConfEnv + "=" + e.conf})
}

func (e *recoveryEnv) stop() { e.srv.Stop(e.t) }

// client runs a client command against the running server.
func (e *recoveryEnv) client(args ...string) (string, error) {
	return e.run(append(args, "--addr", e.srv.GRPCAddr, "--tls-ca", filepath.Join(e.dir, "tls", "ca.crt"),
		"--tls-cert", filepath.Join(e.dir, "admin", "client.crt"), "--tls-key", filepath.Join(e.dir, "admin", "client.key"))...)
}

func (e *recoveryEnv) mustClient(args ...string) string {
	e.t.Helper()
	out, err := e.client(args...)
	if err != nil {
		e.t.Fatalf("sigil %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// publicKeys is each key's public keys and attributes, as keys get says.
func (e *recoveryEnv) publicKeys(ids []string) map[string]string {
	out := map[string]string{}
	for _, id := range ids {
		var k struct {
			Attributes  map[string]string `json:"attributes"`
			Generations []struct {
				KID          string `json:"kid"`
				PublicKeyPEM string `json:"public_key_pem"`
			} `json:"generations"`
		}
		if err := json.Unmarshal([]byte(e.mustClient("keys", "get", id, "--json")), &k); err != nil {
			e.t.Fatal(err)
		}
		b, _ := json.Marshal(k)
		out[id] = string(b)
	}
	return out
}

// tx is an eth_signTransaction object of key from's at nonce n.
func tx(to string, value, nonce int) string {
	return fmt.Sprintf(`{"to":%q,"value":"0x%x","nonce":"0x%x","gas":"0x5208","maxFeePerGas":"0x174876e800","maxPriorityFeePerGas":"0x3b9aca00","chainId":"0x539"}`, to, value, nonce)
}

// The disaster-recovery drill, on bbolt and on etcd: keys of six
// algorithms and three eth keys sign; a backup is taken; five more
// transactions are signed; the store is destroyed. A server on the empty
// store refuses to start, saying why. A tampered backup is refused before
// anything is written; on etcd, a restore killed part-way leaves a store
// every server and plain restore refuses until a restore --force
// finishes. The real one restores, every key with its public keys, kids
// and addresses. The eth keys come back fenced; one reconciled from the
// audit log and one from the node refuse every nonce signed after the
// backup for another transaction, and their daily limits are not
// re-opened; the third, reconciled from nothing, stays fenced.
func TestDisasterRecoveryDrill(t *testing.T) {
	t.Run("bbolt", func(t *testing.T) { drill(t, newRecoveryEnv(t, false)) })
	t.Run("etcd", func(t *testing.T) { drill(t, newRecoveryEnv(t, true)) })
}

func drill(t *testing.T, e *recoveryEnv) {
	e.start()
	raw := []string{"dr-es256", "dr-es384", "dr-es256k", "dr-eddsa", "dr-rs256", "dr-ps256"}
	for i, alg := range []string{"ES256", "ES384", "ES256K", "EdDSA", "RS256", "PS256"} {
		e.mustClient("keys", "create", raw[i], "--alg", alg)
	}
	os.WriteFile(filepath.Join(e.dir, "msg.txt"), []byte("before the disaster\n"), 0o600)
	for _, id := range raw {
		e.mustClient("sign", "--key", id, "--message-file", "msg.txt")
	}
	eth := []string{"dr-eth-audit", "dr-eth-node", "dr-eth-none"}
	addr := map[string]string{}
	for _, id := range eth {
		e.mustClient("keys", "create", id, "--alg", "ES256K", "--purpose", "eth", "--chain-ids", "1337", "--daily-limit", "3000000000000000000", "--max-fee", "1000000000000000000")
		addr[id] = strings.TrimSpace(e.mustClient("eth", "address", "--key", id))
		e.node.Fund(t, addr[id], new(big.Int).Mul(big.NewInt(10), big.NewInt(1e18)))
	}
	to := "0x3535353535353535353535353535353535353535"
	for _, id := range eth { // nonce 0 of each, before the backup
		e.mustClient("eth", "sign-tx", "--key", id, "--tx", tx(to, 1, 0))
	}
	before := e.publicKeys(append(raw, eth...))
	e.mustClient("backup", "--out", "sigil.backup")
	// After the backup: nonces 1-4 of one key, 1 of another.
	for n := 1; n <= 4; n++ {
		e.mustClient("eth", "sign-tx", "--key", "dr-eth-audit", "--tx", tx(to, 1, n))
	}
	rawTx := strings.TrimSpace(e.mustClient("eth", "sign-tx", "--key", "dr-eth-node", "--tx", tx(to, 1, 1)))
	var hash string
	if err := e.node.Call(t, &hash, "eth_sendRawTransaction", rawTx); err != nil { // the node has it: its count is 1
		t.Fatal(err)
	}
	if err := e.node.Call(t, &hash, "eth_sendRawTransaction", strings.TrimSpace(e.mustClient("eth", "sign-tx", "--key", "dr-eth-node", "--tx", tx(to, 1, 0)))); err != nil && !strings.Contains(err.Error(), "known") {
		t.Fatal(err)
	}
	e.stop()

	// The disaster.
	e.destroyStore()
	if out, err := e.run("serve", "--config", e.cfg); err == nil || !strings.Contains(out, "sigil restore") {
		t.Fatalf("a server on an empty store over a token with its keys: %v\n%s", err, out)
	}
	e.destroyStore()

	// A tampered backup is refused and writes nothing.
	good, _ := os.ReadFile(filepath.Join(e.dir, "sigil.backup"))
	bad := bytes.Replace(good, []byte(`"revision":`), []byte(`"revision":1`), 1) // the manifest claims another revision
	if bytes.Equal(bad, good) {
		t.Fatal("the test did not alter the backup")
	}
	os.WriteFile(filepath.Join(e.dir, "tampered.backup"), bad, 0o600)
	if out, err := e.run("restore", "tampered.backup", "--config", e.cfg); err == nil || !strings.Contains(out, "signature does not verify") {
		t.Fatalf("a tampered backup: %v\n%s", err, out)
	}
	restore := []string{"restore", "sigil.backup", "--config", e.cfg}
	if e.etcd != nil { // etcd's restore is batches: one killed part-way is refused until finished
		if out, err := e.runEnv([]string{failpoint.Env + "=restore.after-marker"}, restore...); err == nil || !strings.Contains(out, "failpoint") {
			t.Fatalf("a restore killed part-way: %v\n%s", err, out)
		}
		if out, err := e.run("serve", "--config", e.cfg); err == nil || !strings.Contains(out, "did not finish") {
			t.Fatalf("a server on a store a restore was cut short in: %v\n%s", err, out)
		}
		if out, err := e.run(restore...); err == nil || !strings.Contains(out, "did not finish") {
			t.Fatalf("a restore without --force over one cut short: %v\n%s", err, out)
		}
		restore = append(restore, "--force")
	}
	out := e.must(restore...)
	for _, id := range eth {
		if !strings.Contains(out, "sigil eth reconcile --key "+id) {
			t.Errorf("restore does not say %s is fenced:\n%s", id, out)
		}
	}
	if again, err := e.run("restore", "sigil.backup", "--config", e.cfg); err == nil || !strings.Contains(again, "not empty") {
		t.Errorf("a restore over a store that is not empty: %v\n%s", err, again)
	}
	if out, err := e.run("eth", "reconcile", "--key", "dr-eth-none", "--config", e.cfg); err == nil || !strings.Contains(out, "no evidence") {
		t.Errorf("reconciling from nothing: %v\n%s", err, out)
	}
	// Audit files that do not hold the chain from the backup's head on
	// (here only its last lines) could miss a nonce: refused.
	log, _ := os.ReadFile(filepath.Join(e.dir, "audit.jsonl"))
	lines := strings.SplitAfter(string(log), "\n")
	os.WriteFile(filepath.Join(e.dir, "tail.jsonl"), []byte(strings.Join(lines[len(lines)-4:], "")), 0o600)
	if out, err := e.run("eth", "reconcile", "--key", "dr-eth-audit", "--audit", "tail.jsonl", "--config", e.cfg); err == nil || !strings.Contains(out, "not the whole trail") {
		t.Errorf("reconciling from part of the audit trail: %v\n%s", err, out)
	}
	out = e.must("eth", "reconcile", "--key", "dr-eth-audit", "--audit", "audit.jsonl", "--config", e.cfg)
	if !strings.Contains(out, "4 more from the audit log") {
		t.Errorf("reconcile from the audit log:\n%s", out)
	}
	out = e.must("eth", "reconcile", "--key", "dr-eth-node", "--upstream", e.node.URL, "--config", e.cfg)
	if !strings.Contains(out, "1 more from the node") {
		t.Errorf("reconcile from the node:\n%s", out)
	}

	e.start()
	if after := e.publicKeys(append(raw, eth...)); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("keys changed across the restore:\nbefore %v\nafter  %v", before, after)
	}
	for _, id := range raw {
		e.mustClient("sign", "--key", id, "--message-file", "msg.txt")
	}
	// Every nonce signed after the backup refuses another transaction.
	for n := 1; n <= 4; n++ {
		if out, err := e.client("eth", "sign-tx", "--key", "dr-eth-audit", "--tx", tx(to, 7, n)); err == nil {
			t.Errorf("nonce %d of dr-eth-audit, signed after the backup, signed again for another transaction:\n%s", n, out)
		}
	}
	if out, err := e.client("eth", "sign-tx", "--key", "dr-eth-node", "--tx", tx(to, 7, 1)); err == nil {
		t.Errorf("nonce 1 of dr-eth-node, signed after the backup, signed again:\n%s", out)
	}
	// The daily limit's window counts as spent: value is refused, none is not.
	if out, err := e.client("eth", "sign-tx", "--key", "dr-eth-audit", "--tx", tx(to, 1, 5)); err == nil || !strings.Contains(out, "daily") {
		t.Errorf("a transfer after reconciling: %v\n%s", err, out)
	}
	e.mustClient("eth", "sign-tx", "--key", "dr-eth-audit", "--tx", tx(to, 0, 5))
	if out, err := e.client("eth", "sign-tx", "--key", "dr-eth-none", "--tx", tx(to, 0, 1)); err == nil || !strings.Contains(out, "fenced") {
		t.Errorf("the key nobody reconciled: %v\n%s", err, out)
	}
	e.stop()
}

// With the store lost and no backup, keys recover rebuilds the records
// from the token: a dry run writes nothing; applied per purpose, JWT kids
// and the eth address are unchanged, the JWK Set serves the same kids,
// and the eth key is fenced and allows no chain until its policy is set.
func TestRecoverFromTheHSM(t *testing.T) {
	e := newRecoveryEnv(t, false)
	e.start()
	e.mustClient("keys", "create", "rec-jwt", "--alg", "ES256", "--purpose", "jwt")
	e.mustClient("keys", "rotate", "rec-jwt", "--now")
	e.mustClient("keys", "create", "rec-eth", "--alg", "ES256K", "--purpose", "eth", "--chain-ids", "1337")
	e.mustClient("keys", "create", "rec-raw", "--alg", "EdDSA")
	e.mustClient("ns", "create", "tenant-a")
	e.mustClient("keys", "create", "rec-tenant", "--alg", "ES256", "-n", "tenant-a")
	before := e.publicKeys([]string{"rec-jwt", "rec-eth", "rec-raw"})
	tenantBefore := e.mustClient("keys", "get", "rec-tenant", "-n", "tenant-a", "--json")
	e.stop()
	os.Remove(filepath.Join(e.dir, "keyring.db"))

	plan := e.must("keys", "recover", "--backend", "hsm", "--purpose", "jwt", "--keys", "rec-jwt", "--config", e.cfg)
	if !strings.Contains(plan, "rec-jwt: purpose jwt, ES256, g1 retired, g2 active") || !strings.Contains(plan, "dry run") {
		t.Fatalf("the dry run's plan:\n%s", plan)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "keyring.db")); err == nil {
		t.Fatal("a dry run wrote the store")
	}
	e.must("keys", "recover", "--backend", "hsm", "--purpose", "jwt", "--keys", "rec-jwt", "--apply", "--config", e.cfg)
	out := e.must("keys", "recover", "--backend", "hsm", "--purpose", "eth", "--keys", "rec-e*", "--apply", "--config", e.cfg)
	if !strings.Contains(out, "rec-eth is fenced") {
		t.Errorf("the recovered eth key is not fenced:\n%s", out)
	}
	if out, err := e.run("keys", "recover", "--backend", "hsm", "--purpose", "raw", "--keys", "rec-jwt", "--apply", "--config", e.cfg); err == nil || !strings.Contains(out, "already holds") {
		t.Errorf("recovering keys the store holds: %v\n%s", err, out)
	}
	// A secp256k1 key as a raw one would sign any digest past the nonce
	// guard and the spending policy.
	if out, err := e.run("keys", "recover", "--backend", "hsm", "--purpose", "raw", "--keys", "rec-eth", "--config", e.cfg); err == nil || !strings.Contains(out, "--purpose eth") {
		t.Errorf("recovering an eth key as raw: %v\n%s", err, out)
	}
	e.must("keys", "recover", "--backend", "hsm", "--purpose", "raw", "--keys", "rec-raw", "--apply", "--config", e.cfg)
	// A namespaced key is named NS/ID in the token and in the patterns;
	// its namespace, whose record the store held, is created again.
	if out := e.must("keys", "recover", "--backend", "hsm", "--purpose", "raw", "--keys", "tenant-a/*", "--apply", "--config", e.cfg); !strings.Contains(out, "tenant-a/rec-tenant") {
		t.Errorf("recovering the tenant's keys:\n%s", out)
	}

	e.start()
	e.mustClient("ns", "create", "tenant-a")
	var tb, ta struct {
		Generations []struct {
			PublicKeyPEM string `json:"public_key_pem"`
		}
	}
	tenantAfter := e.mustClient("keys", "get", "rec-tenant", "-n", "tenant-a", "--json")
	if json.Unmarshal([]byte(tenantBefore), &tb) != nil || json.Unmarshal([]byte(tenantAfter), &ta) != nil || len(ta.Generations) != 1 || fmt.Sprint(ta) != fmt.Sprint(tb) {
		t.Errorf("the tenant's key across the recovery:\nbefore %s\nafter  %s", tenantBefore, tenantAfter)
	}
	os.WriteFile(filepath.Join(e.dir, "msg.txt"), []byte("tenant\n"), 0o600)
	e.mustClient("sign", "--key", "rec-tenant", "-n", "tenant-a", "--message-file", "msg.txt")
	after := e.publicKeys([]string{"rec-jwt", "rec-eth", "rec-raw"})
	for id, b := range before {
		if after[id] != b {
			t.Errorf("%s changed across the recovery:\nbefore %s\nafter  %s", id, b, after[id])
		}
	}
	e.mustClient("jwt", "sign", "--key", "rec-jwt", "--claims", `{"sub":"a"}`)
	if out, err := e.client("eth", "sign-tx", "--key", "rec-eth", "--tx", tx("0x3535353535353535353535353535353535353535", 0, 0)); err == nil {
		t.Errorf("the recovered eth key signed before its policy was set and it was reconciled:\n%s", out)
	}
	e.stop()
}
