// Package softhsmtest gives tests a real SoftHSM token in a temporary
// folder. SoftHSM reads its configuration and its list of tokens once per
// process, when the module is initialised: a token created later is not
// seen. So TestMain (through Main) creates every token the test binary will
// use up front, and each Token call hands out the next one.
//
// Without SoftHSM a test skips, except under CI=true, where it fails: CI
// must never pass by skipping the tests that matter.
package softhsmtest

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/secret"
	"github.com/sigil-hsm/sigil/internal/softhsm"
)

var (
	dir    string
	tokens []softhsm.Token
	setup  error
	next   atomic.Int64
)

// Main sets up the process's SoftHSM folder with n tokens for each run
// that -count asks for, runs the tests and removes it. Call it from
// TestMain.
func Main(m *testing.M, n int) {
	flag.Parse()
	if c := flag.Lookup("test.count"); c != nil {
		if count, err := strconv.Atoi(c.Value.String()); err == nil && count > 1 {
			n *= count
		}
	}
	d, err := os.MkdirTemp("", "sigil-softhsm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir = d
	setup = createTokens(n)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Require skips tb (or fails it under CI=true) when SoftHSM is missing.
func Require(tb testing.TB) {
	tb.Helper()
	if err := softhsm.Available(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("SoftHSM is required under CI=true: %v", err)
		}
		tb.Skipf("SoftHSM missing: %v", err)
	}
	if dir == "" {
		tb.Fatal("softhsmtest.Main was not called from TestMain")
	}
	if setup != nil {
		tb.Fatalf("creating SoftHSM tokens: %v", setup)
	}
}

func createTokens(n int) error {
	if err := softhsm.Available(); err != nil {
		return err
	}
	conf, err := softhsm.WriteConf(dir)
	if err != nil {
		return err
	}
	os.Setenv(softhsm.ConfEnv, conf)
	for i := range n {
		tok, err := softhsm.InitToken(conf, dir, fmt.Sprintf("test-%d", i))
		if err != nil {
			return err
		}
		tokens = append(tokens, tok)
	}
	return nil
}

// Config has the fields of pkcs11.Config, so that a test converts it with
// pkcs11.Config(softhsmtest.Token(t)); this package cannot import the
// backend it is used to test.
type Config struct {
	Module         string        `yaml:"module"`
	Token          string        `yaml:"token"`
	PIN            secret.Ref    `yaml:"pin"`
	Sessions       int           `yaml:"sessions"`
	HealthInterval time.Duration `yaml:"health_interval"`
	// ExclusiveChanges mirrors the pkcs11 backend's field (nil: decided
	// by the token's manufacturer).
	ExclusiveChanges *bool `yaml:"exclusive_changes"`
}

// Token hands out a fresh token and returns a backend configuration for it.
func Token(tb testing.TB) Config {
	tb.Helper()
	Require(tb)
	i := int(next.Add(1)) - 1
	if i >= len(tokens) {
		tb.Fatalf("all %d SoftHSM tokens handed out (SoftHSM sees no token created after it started: pass a larger n to softhsmtest.Main)", len(tokens))
	}
	tok := tokens[i]
	return Config{Module: softhsm.Module, Token: tok.Label, PIN: secret.Ref("file:" + tok.PINFile), Sessions: 4}
}

// TokenDir returns the folder holding the token labelled label, handed
// out by Token.
func TokenDir(tb testing.TB, label string) string {
	tb.Helper()
	d, err := softhsm.TokenDir(dir, label)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// Session opens a logged-in session of the test's own on the token c
// names, as another application (or an attacker with the PIN) would. The
// module is shared with the process's backends: it is never finalised
// here, only the session is closed when the test ends.
func Session(tb testing.TB, c Config) (*pkcs11.Ctx, pkcs11.SessionHandle) {
	tb.Helper()
	ctx := pkcs11.New(c.Module)
	if ctx == nil {
		tb.Fatalf("cannot load %s", c.Module)
	}
	if err := ctx.Initialize(); err != nil && err != pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		tb.Fatal(err)
	}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range slots {
		if info, err := ctx.GetTokenInfo(s); err != nil || strings.TrimRight(info.Label, " \x00") != c.Token {
			continue
		}
		h, err := ctx.OpenSession(s, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { ctx.CloseSession(h) })
		pin, err := c.PIN.Resolve("pin")
		if err != nil {
			tb.Fatal(err)
		}
		if err := ctx.Login(h, pkcs11.CKU_USER, string(pin)); err != nil && err != pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
			tb.Fatal(err)
		}
		return ctx, h
	}
	tb.Fatalf("token %q not found", c.Token)
	return nil, 0
}
