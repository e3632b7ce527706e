package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/failpoint"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/softhsm"
)

// proc is a `sigil serve --config` process run by a test.
type proc struct {
	cmd       *exec.Cmd
	grpcAddr  string
	httpAddr  string // public: JWK Sets, the audit key
	adminAddr string // health, readiness, metrics
	logs      *syncBuffer
	exited    chan struct{}
}

// startConfigServer runs `sigil serve --config cfg` with env added and
// returns once it listens.
func startConfigServer(t *testing.T, bin, cfg string, env ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, "serve", "--config", cfg), logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	out, _ := p.cmd.StdoutPipe()
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.kill)
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "sigil listening") {
				line <- sc.Text()
			}
		}
	}()
	select {
	case l := <-line:
		fmt.Sscanf(l, "sigil listening: gRPC %s HTTP %s admin %s", &p.grpcAddr, &p.httpAddr, &p.adminAddr)
		p.grpcAddr, p.httpAddr = strings.TrimSuffix(p.grpcAddr, ","), strings.TrimSuffix(p.httpAddr, ",")
	case <-p.exited:
		t.Fatalf("server exited while starting: %s", p.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not start: %s", p.logs.String())
	}
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not stop: %s", p.logs.String())
	}
	if !p.cmd.ProcessState.Success() {
		t.Fatalf("server exit after SIGTERM: %v\n%s", p.cmd.ProcessState, p.logs.String())
	}
}

// died waits up to d for the process to die by SIGKILL (a failpoint).
func (p *proc) died(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("server still running %v after its failpoint should have fired: %s", d, p.logs.String())
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("server ended by %v, want SIGKILL from its failpoint: %s", p.cmd.ProcessState, p.logs.String())
	}
}

// procEnv is one server's world: a SoftHSM token, a bbolt keyring, an
// audit log, the dev PKI and a configuration whose sweep runs often.
type procEnv struct {
	t               *testing.T
	bin, dir, token string
	audit           string // the audit log's path; tests may move it before start
	conf, pin       string
	pinFile         string
	hsmDir          string
	pki             mtls.DevPKI
	srv             *proc
}

func newProcEnv(t *testing.T, bin string) *procEnv {
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
	return &procEnv{t: t, bin: bin, dir: dir, token: "crash", conf: conf, hsmDir: filepath.Join(dir, "hsm"), pin: strings.TrimSpace(string(pin)),
		pinFile: tok.PINFile, pki: pki, audit: filepath.Join(dir, "audit.jsonl")}
}

// start writes the configuration and runs the server, with failpoint
// armed unless it is "".
func (e *procEnv) start(fp string) {
	cfg := filepath.Join(e.dir, "sigil.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`grpc: {addr: "127.0.0.1:0", tls: {cert: %s, key: %s, client_ca: %s}}
http: {public_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0"}
store: {type: bbolt, path: %s}
audit: {path: %s, replica: r1, checkpoint: {every: 20, interval: 500ms}}
policy: %s
keyring: {retention: 1s, sweep_interval: 300ms, orphan_grace: 1s}
backends:
  hsm: {type: pkcs11, module: %s, token: crash, pin: "file:%s"}
`, e.pki.ServerCert, e.pki.ServerKey, e.pki.CA, filepath.Join(e.dir, "keyring.db"), e.audit, filepath.Join(e.dir, "policy.yaml"), softhsm.Module, e.pinFile)), 0o600)
	env := []string{softhsm.ConfEnv + "=" + e.conf}
	if fp != "" {
		env = append(env, failpoint.Env+"="+fp)
	}
	e.srv = startConfigServer(e.t, e.bin, cfg, env...)
}
