package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/sigil-hsm/sigil/console"
	"github.com/sigil-hsm/sigil/console/consoletest"
	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server"
)

// consoleKeys is how many keys the console's pages are measured over,
// against the same pages over consoleFewKeys.
const (
	consoleKeys    = 10000
	consoleFewKeys = 100
)

// consoleOperator is the identity signed in to the console.
const consoleOperator = "spiffe://bench.sigil/operator"

// consoleTable: each console page, signed in with a passkey (in
// software, through the console's own API), over 10 000 keys against
// the same page over 100: a page is its reads through the access path as
// the operator (ListKeys filters, counts and pages every key the
// operator may read) and its template. Timed by one caller over
// loopback HTTPS with keep-alive, so a page's time is the server's and a
// round trip. The keys are records cloned from one ES256 key made in
// SoftHSM: the pages read records, never the HSM.
func (b *bench) consoleTable(dir string) ([]row, error) {
	few, stopFew, err := b.consoleWith(filepath.Join(dir, "console-few"), consoleFewKeys)
	if err != nil {
		return nil, err
	}
	defer stopFew()
	many, stopMany, err := b.consoleWith(filepath.Join(dir, "console-many"), consoleKeys)
	if err != nil {
		return nil, err
	}
	defer stopMany()
	var rows []row
	for _, p := range []struct{ name, path func(n int) string }{
		{func(int) string { return "keys, first page" }, func(int) string { return "/keys" }},
		{func(int) string { return "keys, an owner's" }, func(int) string { return "/keys?owner=team-07" }},
		{func(int) string { return "keys, a label's" }, func(int) string { return "/keys?label=env%3Dstaging" }},
		{func(int) string { return "keys, a page 90 % in" }, func(n int) string {
			return "/keys?page=" + base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "app-%05d", n*9/10))
		}},
		{func(int) string { return "a key" }, func(int) string { return "/keys/app-00042" }},
		{func(int) string { return "approvals" }, func(int) string { return "/approvals" }},
		{func(int) string { return "JWK Sets" }, func(int) string { return "/jwks" }},
		{func(int) string { return "audit" }, func(int) string { return "/audit" }},
		{func(int) string { return "health" }, func(int) string { return "/health" }},
	} {
		r, err := b.pair(p.name(0), few.get(p.path(consoleFewKeys)), many.get(p.path(consoleKeys)), []int{1})
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// consolePages is a console with n keys and a signed-in client of it.
type consolePages struct {
	origin string
	client *http.Client
}

// get is an operation that fetches path and wants it whole and 200.
func (c consolePages) get(path string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.origin+path, nil)
		resp, err := c.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s: %.200s", path, resp.Status, body)
		}
		return err
	}
}

// consoleWith runs a server over a store of n keys with a console, and
// signs the operator in with a software passkey.
func (b *bench) consoleWith(dir string, n int) (consolePages, func(), error) {
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	fail := func(err error) (consolePages, func(), error) { stop(); return consolePages{}, nil, err }
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	store, err := boltstore.Open(filepath.Join(dir, "keyring.db"))
	if err != nil {
		return fail(err)
	}
	stops = append(stops, func() { store.Close() })
	kr, err := b.keysIn(store, n)
	if err != nil {
		return fail(err)
	}
	policy, err := authz.Parse(fmt.Appendf(nil, "rules:\n  - identity: %s\n    keys: [\"*\"]\n    allow: [keys.read, console.admin, approvals.approve]\n", consoleOperator))
	if err != nil {
		return fail(err)
	}
	al, err := audit.Open(b.ctx, audit.Options{Path: filepath.Join(dir, "audit.jsonl"), Signer: keyring.AuditSigner{Keyring: kr}, Anchors: store})
	if err != nil {
		return fail(err)
	}
	stops = append(stops, func() { al.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	origin := "https://localhost:" + fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	srv := server.New(server.Options{Keyring: kr, Backends: b.backends, Authz: authz.Fixed(policy), Audit: al, Ledger: store, Anchors: store,
		ConsoleOrigin: origin, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	con, err := console.New(console.Options{Access: srv, Store: console.Store{A: store}, Origin: origin, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return fail(err)
	}
	hs := httptest.NewUnstartedServer(con.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.StartTLS()
	stops = append(stops, hs.Close)
	jar, _ := cookiejar.New(nil)
	addr := ln.Addr().String()
	client := &http.Client{Jar: jar, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the server's own test certificate, on loopback
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 4,
	}}
	op, _ := identity.Parse(consoleOperator)
	var enrolled sigilv1.EnrollResponse
	if err := srv.Invoke(srv.As(b.ctx, op, "bench"), sigilv1.ConsoleService_Enroll_FullMethodName, &sigilv1.EnrollRequest{Identity: consoleOperator}, &enrolled); err != nil {
		return fail(err)
	}
	passkey, err := consoletest.Generate("operator", origin, "localhost")
	if err != nil {
		return fail(err)
	}
	if err := consoletest.SignIn(client, enrolled.GetUrl(), passkey); err != nil {
		return fail(fmt.Errorf("signing in to the console: %w", err))
	}
	return consolePages{origin: origin, client: client}, stop, nil
}

// keysIn fills store with n raw ES256 keys: one made in SoftHSM (the
// token is the bench's, so named for n) and n-1 records cloned from it,
// app-00000 on, each with an owner of fifty and an env label of two; and
// the audit key's record. It returns a keyring over them.
func (b *bench) keysIn(store *boltstore.Store, n int) (*keyring.Keyring, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	kr, err := keyring.New(b.ctx, keyring.Options{Store: store, Backends: b.backends, DefaultBackend: "bench", Logger: quiet})
	if err != nil {
		return nil, err
	}
	seed, err := kr.Create(b.ctx, keyring.CreateSpec{ID: fmt.Sprintf("seed-%d", n), Purpose: "raw", Algorithm: "ES256", Owner: "team-00", Labels: map[string]string{"env": "prod"}})
	if err != nil {
		return nil, err
	}
	snap, err := store.Snapshot(b.ctx) // the clones go in in one transaction
	if err != nil {
		return nil, err
	}
	// The audit key is the bench keyring's, its record copied: the audit
	// page verifies checkpoints signed with it.
	auditKey, err := b.kr.EnsureAuditKey(b.ctx)
	if err != nil {
		return nil, err
	}
	if snap.Keys[keyring.AuditKeyID], err = json.Marshal(auditKey); err != nil {
		return nil, err
	}
	for i := range n - 1 {
		k := *seed
		k.ID, k.Owner = fmt.Sprintf("app-%05d", i), fmt.Sprintf("team-%02d", i%50)
		k.Labels = map[string]string{"env": []string{"prod", "staging"}[i%2], "app": strings.Repeat("x", i%7+1)}
		if snap.Keys[k.ID], err = json.Marshal(&k); err != nil {
			return nil, err
		}
	}
	if err := store.Restore(b.ctx, snap, true); err != nil {
		return nil, err
	}
	return keyring.New(b.ctx, keyring.Options{Store: store, Backends: b.backends, DefaultBackend: "bench", Logger: quiet})
}
