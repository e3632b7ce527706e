package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/config"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/signer"
)

// local is what the server opens, opened by a command on the server's
// host (sigil pki): its backends, store, keyring and audit log. With a
// bbolt store the server must be stopped (the file is locked while it
// runs); with etcd both may run.
type local struct {
	kr    *keyring.Keyring
	store ledgerStore
	audit *audit.Log
	who   string // the audit identity of the host's operator
	close func()
}

// openBackends opens every backend cfg names; close closes those opened.
func openBackends(ctx context.Context, cfg *config.Config, log *slog.Logger) (map[string]signer.Backend, func(), error) {
	backends := map[string]signer.Backend{}
	closeAll := func() {
		for name, b := range backends {
			if err := b.Close(); err != nil {
				log.Error("closing backend", "backend", name, "err", err)
			}
		}
	}
	for name, bc := range cfg.Backends {
		b, err := signer.Open(ctx, bc.Type, name, bc.Decode)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		backends[name] = b
	}
	return backends, closeAll, nil
}

// openLocal opens what the configuration at path names.
func openLocal(ctx context.Context, path string) (*local, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	log := quietLog()
	backends, closeBackends, err := openBackends(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	store, _, err := openStore(ctx, cfg.Store, log)
	if err != nil {
		closeBackends()
		return nil, storeInUse(cfg, err)
	}
	kr, err := keyring.New(ctx, keyring.Options{Store: store, Backends: backends, DefaultBackend: cfg.DefaultBackend, Logger: log,
		SoleWriter: cfg.Store.Type != "etcd", Retention: cfg.Keyring.Retention, CreatingGrace: cfg.Keyring.CreatingGrace,
		SweepInterval: cfg.Keyring.SweepInterval, OrphanGrace: cfg.Keyring.OrphanGrace})
	if err == nil {
		var a *audit.Log
		if a, err = openAudit(ctx, cfg.Audit, kr, store, log); err == nil {
			return &local{kr: kr, store: store, audit: a, who: operator(), close: func() { a.Close(); store.Close(); closeBackends() }}, nil
		}
	}
	store.Close()
	closeBackends()
	return nil, err
}

// quietLog is the log of a command on the host: warnings and errors, as
// JSON on stderr.
func quietLog() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// storeInUse says why a bbolt store may not open: a running server holds it.
func storeInUse(cfg *config.Config, err error) error {
	if cfg.Store.Type != "etcd" {
		return fmt.Errorf("%w (is the server running? stop it first: a bbolt store is one process's)", err)
	}
	return err
}

// operator names who runs a command on the host, for its audit records:
// local:USER@HOST.
func operator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if sudo := os.Getenv("SUDO_USER"); sudo != "" && name == "root" {
		name = sudo + " (sudo)"
	}
	host, _ := os.Hostname()
	return "local:" + name + "@" + strings.ToLower(host)
}

// record audits one use of a key made on the host.
func (l *local) record(op, keyID string, generation int, err error, reason string) error {
	rec := &audit.Record{Time: time.Now().UTC(), Identity: l.who, Operation: op, KeyID: keyID, Generation: generation, Outcome: "allowed", Code: "OK", Reason: reason}
	if err != nil {
		rec.Outcome, rec.Code, rec.Reason = "failed", "Unknown", err.Error()
	}
	return l.audit.Write(rec)
}
