// Package framework runs the sigil binary the way an operator does, for
// the end-to-end tests in tests/e2e (as etcd's tests/framework does for
// etcd): it builds cmd/sigil, starts `sigil serve --dev` or
// `sigil serve --config` over a fresh SoftHSM token, the dev PKI and a
// bbolt keyring (Env), runs CLI commands against it, and stops or kills
// it. Embedded etcd and local-kms come from internal/testutil (etcdtest,
// kmstest); tests that need only the server in-process use
// server/servertest instead.
package framework

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/softhsm"
)

// RequireTools skips (fails under CI=true) without SoftHSM and the named
// commands.
func RequireTools(t *testing.T, commands ...string) {
	t.Helper()
	err := softhsm.Available()
	for _, c := range commands {
		if _, lerr := exec.LookPath(c); err == nil && lerr != nil {
			err = lerr
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("required under CI=true: %v", err)
		}
		t.Skip(err)
	}
}

// moduleRoot is the module's top folder, found from this file's place.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Build compiles the sigil binary for the test and returns its path.
func Build(t *testing.T) string {
	t.Helper()
	return build(t)
}

// BuildRace compiles the sigil binary with the race detector: a server
// that races writes "WARNING: DATA RACE" to its logs.
func BuildRace(t *testing.T) string {
	t.Helper()
	return build(t, "-race")
}

func build(t *testing.T, flags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sigil")
	cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", bin, "./cmd/sigil")...)
	cmd.Dir = moduleRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Run runs a sigil command and returns its standard output; it fails the
// test if the command fails.
func Run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("sigil %v: %v: %s", args, err, msg)
	}
	return string(out)
}

// SyncBuffer is a strings.Builder safe for the writer and a reader.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Proc is a running `sigil serve`.
type Proc struct {
	Cmd        *exec.Cmd
	GRPCAddr   string
	HTTPAddr   string // public: JWK Sets, the audit key
	AdminAddr  string // health, readiness, metrics
	EthRPCAddr string // Ethereum JSON-RPC, if served
	Logs       *SyncBuffer
	exited     chan struct{}
}

// Serve runs `sigil serve` with args and env added, and returns once it
// listens. The process is killed when the test ends.
func Serve(t *testing.T, bin string, args, env []string) *Proc {
	t.Helper()
	p, err := TryServe(t, bin, args, env)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TryServe is Serve answering an error when the server exits or does not
// listen within 30 s (a test that picked a port may try another).
func TryServe(t *testing.T, bin string, args, env []string) (*Proc, error) {
	t.Helper()
	p := &Proc{Cmd: exec.Command(bin, append([]string{"serve"}, args...)...), Logs: &SyncBuffer{}, exited: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), env...)
	out, _ := p.Cmd.StdoutPipe()
	p.Cmd.Stderr = p.Logs
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.Cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.Kill)
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
	case l := <-line: // sigil listening: gRPC A, HTTP B, admin C[, ethrpc D]
		f := strings.Fields(strings.ReplaceAll(strings.TrimPrefix(l, "sigil listening:"), ",", ""))
		addrs := map[string]*string{"gRPC": &p.GRPCAddr, "HTTP": &p.HTTPAddr, "admin": &p.AdminAddr, "ethrpc": &p.EthRPCAddr}
		for i := 0; i+1 < len(f); i += 2 {
			if a, ok := addrs[f[i]]; ok {
				*a = f[i+1]
			}
		}
	case <-p.exited:
		return nil, fmt.Errorf("server exited while starting: %s", p.Logs.String())
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("server did not start: %s", p.Logs.String())
	}
	return p, nil
}

// ServeConfig runs `sigil serve --config cfg`.
func ServeConfig(t *testing.T, bin, cfg string, env ...string) *Proc {
	t.Helper()
	return Serve(t, bin, []string{"--config", cfg}, env)
}

// ServeDev runs `sigil serve --dev` over dataDir on free loopback ports.
func ServeDev(t *testing.T, bin, dataDir string, env ...string) *Proc {
	t.Helper()
	return Serve(t, bin, []string{"--dev", "--data-dir", dataDir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--ethrpc-addr", "127.0.0.1:0"}, env)
}

// Exited is closed when the process has ended.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Kill sends SIGKILL and waits for the end.
func (p *Proc) Kill() {
	p.Cmd.Process.Kill()
	<-p.exited
}

// Stop sends SIGTERM and waits for a clean exit.
func (p *Proc) Stop(t *testing.T) {
	t.Helper()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not stop: %s", p.Logs.String())
	}
	if !p.Cmd.ProcessState.Success() {
		t.Fatalf("server exit after SIGTERM: %v\n%s", p.Cmd.ProcessState, p.Logs.String())
	}
}

// Died waits up to d for the process to die by SIGKILL (a failpoint).
func (p *Proc) Died(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("server still running %v after its failpoint should have fired: %s", d, p.Logs.String())
	}
	if ws, ok := p.Cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("server ended by %v, want SIGKILL from its failpoint: %s", p.Cmd.ProcessState, p.Logs.String())
	}
}

// KeyJSON is what tests read of a key's `--json` shape (CLI.md).
type KeyJSON struct {
	ID          string `json:"id"`
	Alg         string `json:"alg"`
	Purpose     string `json:"purpose"`
	Generations []struct {
		Generation   int32  `json:"generation"`
		State        string `json:"state"`
		KID          string `json:"kid"`
		PublicKeyPEM string `json:"public_key_pem"`
		BackendRef   string `json:"backend_ref"`
	} `json:"generations"`
}

// DevServer runs ServeDev and returns a function that stops it cleanly.
func DevServer(t *testing.T, bin, dataDir string, env ...string) (stop func()) {
	t.Helper()
	p := ServeDev(t, bin, dataDir, env...)
	return func() { p.Stop(t) }
}
