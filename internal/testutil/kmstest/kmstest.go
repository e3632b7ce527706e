// Package kmstest runs the local-kms emulator (bin/local-kms, built by
// make kms-deps) for tests and the benchmark driver: on a free loopback
// port, with its data in a given folder. Without the binary a test skips,
// except under CI=true, where it fails.
package kmstest

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Region and Account are what the emulator is started with.
const (
	Region  = "eu-west-1"
	Account = "111122223333"
)

// Emulator is a running local-kms.
type Emulator struct {
	Endpoint string
	port     int
	dir      string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
}

func binary() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "bin", "local-kms")
}

// Available reports why the emulator cannot run, or nil.
func Available() error {
	_, err := os.Stat(binary())
	return err
}

// Start runs an emulator for a test, stopped when it ends, and sets
// throwaway AWS credentials in the environment (local-kms does not check
// signatures; the SDK wants some).
func Start(tb testing.TB) *Emulator {
	tb.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("local-kms is required under CI=true (make kms-deps): %v", err)
		}
		tb.Skipf("local-kms missing (make kms-deps): %v", err)
	}
	creds, err := FakeCredentials()
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range creds {
		tb.Setenv(k, v)
	}
	e, err := Run(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Stop)
	return e
}

// FakeCredentials are throwaway values for the SDK's default chain, kept
// in testdata/throwaway-test-credentials.json.
func FakeCredentials() (map[string]string, error) {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "throwaway-test-credentials.json"))
	if err != nil {
		return nil, err
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "_comment")
	return m, nil
}

// Run starts an emulator keeping its data in dir.
func Run(dir string) (*Emulator, error) {
	e := &Emulator{dir: dir}
	var err error
	for range 3 { // local-kms panics if its port is taken: retry on another
		l, lerr := net.Listen("tcp", "127.0.0.1:0")
		if lerr != nil {
			return nil, lerr
		}
		e.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		if err = e.Restart(); err == nil {
			e.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", e.port)
			return e, nil
		}
	}
	return nil, err
}

// Restart starts the emulator again on the same port and data. It fails
// if the emulator exits while starting (local-kms exits when its port is
// taken), so Run can try another port.
func (e *Emulator) Restart() error {
	cmd := exec.Command(binary())
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", e.port), "KMS_DATA_PATH="+e.dir, "KMS_REGION="+Region, "KMS_ACCOUNT_ID="+Account)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	e.cmd, e.exited = cmd, exited
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			return fmt.Errorf("local-kms exited while starting on port %d", e.port)
		default:
		}
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.port)); err == nil {
			c.Close()
			return nil
		}
	}
	e.Stop()
	return fmt.Errorf("local-kms did not listen on port %d", e.port)
}

// Stop stops the emulator; its data stays for Restart.
func (e *Emulator) Stop() {
	if e.cmd != nil {
		e.cmd.Process.Kill()
		<-e.exited
		e.cmd = nil
	}
}
