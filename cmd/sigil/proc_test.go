package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is a `sigil serve --config` process run by a test.
type proc struct {
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	logs     *syncBuffer
	exited   chan struct{}
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
		fmt.Sscanf(l, "sigil listening: gRPC %s HTTP %s", &p.grpcAddr, &p.httpAddr)
		p.grpcAddr = strings.TrimSuffix(p.grpcAddr, ",")
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
