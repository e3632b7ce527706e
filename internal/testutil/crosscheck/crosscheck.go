// Package crosscheck runs the scripts in testdata/crosscheck, which check
// Sigil's output with implementations that are not ours (the jose and
// ethers npm packages, PyJWT), and the Go relying parties of the
// tests/rpcheck module. It is for tests: without node, python3-jwt or the
// packages a test skips, except under CI=true, where it fails.
package crosscheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// dir is testdata/crosscheck, found from this file's place in the module.
func dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "crosscheck")
}

// Require skips tb (fails it under CI=true) unless node and the packages
// are installed (make crosscheck-deps).
func Require(tb testing.TB) {
	tb.Helper()
	_, err := exec.LookPath("node")
	for _, pkg := range []string{"ethers", "jose", "jose6", "viem", "web3", "undici"} {
		if err == nil {
			_, err = os.Stat(filepath.Join(dir(), "node_modules", pkg))
		}
	}
	if err == nil {
		err = exec.Command("/usr/bin/python3", "-c", "import jwt, cryptography").Run()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("node and the cross-check packages are required under CI=true (make crosscheck-deps): %v", err)
		}
		tb.Skipf("cross-check unavailable (make crosscheck-deps): %v", err)
	}
}

// Run runs script with args and returns its standard output; it fails tb
// with the script's output when the script fails.
func Run(tb testing.TB, script string, args ...string) []byte {
	tb.Helper()
	Require(tb)
	cmd := exec.Command("node", append([]string{filepath.Join(dir(), script)}, args...)...)
	var stderr []byte
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	if err != nil {
		tb.Fatalf("node %s: %v\n%s", script, err, stderr)
	}
	return out
}

// Try runs script and reports whether it succeeded, for checks that
// expect it to reject its input.
func Try(tb testing.TB, script string, args ...string) bool {
	tb.Helper()
	Require(tb)
	return exec.Command("node", append([]string{filepath.Join(dir(), script)}, args...)...).Run() == nil
}
