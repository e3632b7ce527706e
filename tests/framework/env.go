package framework

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sigil-hsm/sigil/internal/failpoint"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/softhsm"
)

// Env is one configured server's world: a SoftHSM token, a bbolt keyring,
// an audit log, the dev PKI, a policy letting the dev client administer
// and sign, and a configuration whose sweep runs often.
type Env struct {
	T       *testing.T
	Bin     string
	Dir     string
	Token   string // the token's label
	Audit   string // the audit log's path; tests may move it before Start
	Conf    string // the SoftHSM configuration file
	PIN     string // the token's throwaway user PIN
	PINFile string
	HSMDir  string // the token folder
	PKI     mtls.DevPKI
	Srv     *Proc // the running server, after Start
	// Extra is added to the configuration Start writes; Env is added to
	// the server's environment.
	Extra string
	Env   []string
}

// NewEnv makes the world; Start runs the server in it.
func NewEnv(t *testing.T, bin string) *Env {
	dir := t.TempDir()
	conf, err := softhsm.WriteConf(filepath.Join(dir, "hsm"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := softhsm.InitToken(conf, filepath.Join(dir, "hsm"), "crash")
	if err != nil {
		t.Fatal(err)
	}
	pin, _ := os.ReadFile(tok.PINFile)
	pki, err := mtls.EnsureDevPKI(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("rules:\n  - identity: "+mtls.DevClientIdentity+"\n    keys: [\"*\"]\n    allow: [keys.admin, keys.read, sign.jwt, sign.raw]\n"), 0o600)
	return &Env{T: t, Bin: bin, Dir: dir, Token: "crash", Conf: conf, HSMDir: filepath.Join(dir, "hsm"), PIN: strings.TrimSpace(string(pin)),
		PINFile: tok.PINFile, PKI: pki, Audit: filepath.Join(dir, "audit.jsonl")}
}

// Start writes the configuration and runs the server, with the failpoint
// fp armed unless it is "".
func (e *Env) Start(fp string) {
	cfg := filepath.Join(e.Dir, "sigil.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`grpc: {addr: "127.0.0.1:0", tls: {cert: %s, key: %s, client_ca: %s}}
http: {public_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0"}
store: {type: bbolt, path: %s}
audit: {path: %s, replica: r1, checkpoint: {every: 20, interval: 500ms}}
policy: %s
keyring: {retention: 1s, sweep_interval: 300ms, orphan_grace: 1s}
backends:
  hsm: {type: pkcs11, module: %s, token: crash, pin: "file:%s"}
%s`, e.PKI.ServerCert, e.PKI.ServerKey, e.PKI.CA, filepath.Join(e.Dir, "keyring.db"), e.Audit, filepath.Join(e.Dir, "policy.yaml"), softhsm.Module, e.PINFile, e.Extra)), 0o600)
	env := append([]string{softhsm.ConfEnv + "=" + e.Conf}, e.Env...)
	if fp != "" {
		env = append(env, failpoint.Env+"="+fp)
	}
	e.Srv = ServeConfig(e.T, e.Bin, cfg, env...)
}

// Sigil runs a client command against the server, as the dev client.
func (e *Env) Sigil(args ...string) (string, error) {
	out, err := exec.Command(e.Bin, append(args, "--addr", e.Srv.GRPCAddr, "--tls-cert", e.PKI.ClientCert,
		"--tls-key", e.PKI.ClientKey, "--tls-ca", e.PKI.CA)...).CombinedOutput()
	return string(out), err
}

// Must is Sigil that fails the test if the command fails.
func (e *Env) Must(args ...string) string {
	e.T.Helper()
	out, err := e.Sigil(args...)
	if err != nil {
		e.T.Fatalf("sigil %v: %v\n%s\nserver: %s", args, err, out, e.Srv.Logs.String())
	}
	return out
}

// P11 runs pkcs11-tool, logged in to the token.
func (e *Env) P11(args ...string) string {
	e.T.Helper()
	cmd := exec.Command("pkcs11-tool", append([]string{"--module", softhsm.Module, "--token-label", e.Token, "--login", "--pin", e.PIN}, args...)...)
	cmd.Env = append(os.Environ(), softhsm.ConfEnv+"="+e.Conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.T.Fatalf("pkcs11-tool %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Dial connects to the server's gRPC listener as the dev client.
func (e *Env) Dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	tc, err := mtls.ClientConfig(e.PKI.ClientCert, e.PKI.ClientKey, e.PKI.CA)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(e.Srv.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
