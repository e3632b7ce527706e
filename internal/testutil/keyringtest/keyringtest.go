// Package keyringtest builds keyrings for tests: a bbolt store in a
// temporary folder over the backends a test names, or over a fresh
// SoftHSM token. Everything is closed when the test ends.
package keyringtest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	_ "github.com/sigil-hsm/sigil/purpose/all" // keys of every purpose can be made
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

// Env is a test keyring and what it stands on.
type Env struct {
	Keyring *keyring.Keyring
	Store   *boltstore.Store
	HSM     *pkcs11.Backend // nil unless made by HSM
}

// Options adjust the keyring; Backends and DefaultBackend are set by
// the constructors.
type Options struct {
	Now       func() time.Time
	Retention time.Duration
}

// HSM returns a keyring whose default backend "hsm" is a fresh SoftHSM
// token (softhsmtest.Main must run in TestMain).
func HSM(tb testing.TB, o Options) *Env {
	tb.Helper()
	hsm, err := pkcs11.Open(context.Background(), "hsm", pkcs11.Config(softhsmtest.Token(tb)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { hsm.Close() })
	e := With(tb, "hsm", hsm, o)
	e.HSM = hsm
	return e
}

// With returns a keyring whose one backend, and default, is b.
func With(tb testing.TB, name string, b signer.Backend, o Options) *Env {
	tb.Helper()
	store, err := boltstore.Open(filepath.Join(tb.TempDir(), "keyring.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	kr, err := keyring.New(context.Background(), keyring.Options{Store: store, Backends: map[string]signer.Backend{name: b}, DefaultBackend: name,
		Now: o.Now, Retention: o.Retention, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	return &Env{Keyring: kr, Store: store}
}
