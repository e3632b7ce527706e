// Package console_test drives the console in a real browser: Debian's
// Chromium, headless, through chromedp, with passkeys in the DevTools
// WebAuthn virtual authenticator.
package console_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/sigil-hsm/sigil/internal/softhsm"
	"github.com/sigil-hsm/sigil/tests/framework"
)

const chromium = "/usr/bin/chromium"

type env struct {
	t             *testing.T
	bin, dir, cfg string
	conf          string
	srv           *framework.Proc
	origin, tok   string
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// newEnv runs a server whose policy lets officers approve transfers of
// 10 ETH and more, two of them, and serves the console on localhost.
func newEnv(t *testing.T) *env {
	framework.RequireTools(t)
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Chromium is required under CI=true (make deps): %v", err)
		}
		t.Skip(err)
	}
	e := &env{t: t, bin: framework.Build(t), dir: t.TempDir()}
	var err error
	if e.conf, err = softhsm.WriteConf(e.dir); err != nil {
		t.Fatal(err)
	}
	tok, err := softhsm.InitToken(e.conf, e.dir, "con")
	if err != nil {
		t.Fatal(err)
	}
	e.tok = tok.PINFile
	e.start()
	return e
}

// start writes the configuration on a free port for the console and
// starts the server (again on another port if that one was taken
// meanwhile: other tests share the machine's ports).
func (e *env) start() {
	t := e.t
	for try := 0; ; try++ {
		port := freePort(t)
		e.origin = "https://localhost:" + port
		e.writeConfig(port)
		if try == 0 {
			e.sigil("pki", "init", "--config", e.cfg, "--out", filepath.Join(e.dir, "tls", "ca.crt"))
			e.sigil("pki", "issue", "--config", e.cfg, "--server", "localhost,127.0.0.1", "--out-dir", filepath.Join(e.dir, "tls"))
			e.sigil("pki", "issue", "--config", e.cfg, "--client", "spiffe://example.org/admin", "--out-dir", filepath.Join(e.dir, "admin"))
			e.sigil("pki", "issue", "--config", e.cfg, "--client", "spiffe://example.org/treasury-officer/carol", "--out-dir", filepath.Join(e.dir, "carol"))
		}
		srv, err := framework.TryServe(t, e.bin, []string{"--config", e.cfg}, []string{softhsm.ConfEnv + "=" + e.conf})
		if err == nil {
			e.srv = srv
			return
		}
		if try == 4 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
}

func (e *env) writeConfig(port string) {
	os.WriteFile(filepath.Join(e.dir, "policy.yaml"), []byte(`rules:
  - identity: spiffe://example.org/admin
    keys: ["*"]
    allow: [keys.admin, keys.read, eth.sign_tx, console.admin]
  - identity: spiffe://example.org/treasury-officer/*
    keys: ["treasury-*"]
    allow: [approvals.approve, keys.read]
approvals:
  - operation: eth.sign_tx
    keys: ["treasury-*"]
    when: {value_gte: "10000000000000000000"}
    approvers: [spiffe://example.org/treasury-officer/alice, spiffe://example.org/treasury-officer/bob, spiffe://example.org/treasury-officer/carol]
    quorum: 2
    require: passkey
`), 0o600)
	e.cfg = filepath.Join(e.dir, "sigil.yaml")
	os.WriteFile(e.cfg, []byte(fmt.Sprintf(`grpc:
  addr: 127.0.0.1:0
  tls: {cert: %[1]s/tls/server.crt, key: %[1]s/tls/server.key, client_ca: %[1]s/tls/ca.crt}
http: {public_addr: 127.0.0.1:0, admin_addr: 127.0.0.1:0}
console: {addr: "127.0.0.1:%[2]s", origin: "%[3]s"}
store: {type: bbolt, path: %[1]s/keyring.db}
backends:
  hsm: {type: pkcs11, module: %[4]s, token: con, pin: file:%[5]s}
policy: %[1]s/policy.yaml
audit: {path: %[1]s/audit.jsonl}
`, e.dir, port, e.origin, softhsm.Module, e.tok)), 0o600)
}

func (e *env) run(args ...string) (string, error) {
	cmd := exec.Command(e.bin, args...)
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), softhsm.ConfEnv+"="+e.conf)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *env) sigil(args ...string) string {
	e.t.Helper()
	out, err := e.run(args...)
	if err != nil {
		e.t.Fatalf("sigil %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// admin runs a client command as the admin.
func (e *env) admin(args ...string) (string, error) {
	return e.run(append(args, e.adminFlags()...)...)
}

// adminFlags connect a command as the admin.
func (e *env) adminFlags() []string {
	return []string{"--addr", e.srv.GRPCAddr, "--tls-ca", filepath.Join(e.dir, "tls", "ca.crt"),
		"--tls-cert", filepath.Join(e.dir, "admin", "client.crt"), "--tls-key", filepath.Join(e.dir, "admin", "client.key")}
}

// browser is one person's Chromium with a passkey authenticator of
// their own.
func (e *env) browser() context.Context {
	e.t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("ignore-certificate-errors", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.UserDataDir(e.t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	e.t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil { // starts the browser
		e.t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportInternal, HasResidentKey: true,
		HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}}); err != nil {
		e.t.Fatal(err)
	}
	return ctx
}

// status waits for the page's status line to hold want.
func status(want string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[bool](fmt.Sprintf(`document.getElementById("status") && document.getElementById("status").textContent.includes(%q)`, want), chromedp.WithPollingTimeout(30*time.Second))(ctx, t)
		return err
	})
}

// text is the text of the element sel names (CSS).
func text(ctx context.Context, sel string) string {
	s, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	return s
}

// shows waits until the page's text holds want, through the reloads a
// script makes.
func shows(want string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := chromedp.Evaluate[string]("document.body ? document.body.textContent : ''")(ctx, t)
			if err == nil && strings.Contains(got, want) {
				return nil
			}
			if err == nil && strings.Contains(got, "Refused") {
				return fmt.Errorf("refused: %s", got)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the page never showed %q (%v)", want, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// at waits until the page is at path p, through the navigations a
// script makes (an evaluation a navigation cuts short is asked again).
func at(p string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := chromedp.Evaluate[string]("location.pathname")(ctx, t)
			if err == nil && got == p {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the page is at %q, not %q (%v)", got, p, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// enrollAndSignIn enrolls identity, registers the browser's passkey
// through the link and signs in.
func (e *env) enrollAndSignIn(ctx context.Context, id string) {
	e.t.Helper()
	out, err := e.admin("console", "enroll", id)
	if err != nil {
		e.t.Fatalf("console enroll: %v %s", err, out)
	}
	link := strings.TrimSpace(out)
	if !strings.HasPrefix(link, e.origin+"/enroll#") {
		e.t.Fatalf("the enrollment link: %q", link)
	}
	err = chromedp.Do(ctx, chromedp.Navigate(link), chromedp.Click(chromedp.ID("enroll")), status("Registered a passkey for "+id),
		chromedp.Navigate(e.origin+"/login"), chromedp.Click(chromedp.ID("login")), at("/approvals"))
	if err != nil {
		e.t.Fatalf("enrolling and signing in %s: %v (status %q)", id, err, text(ctx, "#status"))
	}
	// The link was for one registration.
	if err := chromedp.Do(ctx, chromedp.Navigate(link), chromedp.Click(chromedp.ID("enroll")), status("Refused")); err != nil || !strings.Contains(text(ctx, "#status"), "unknown, used, expired or cancelled") {
		e.t.Errorf("the enrollment link used again: %v %q", err, text(ctx, "#status"))
	}
}

// Two officers enroll, sign in with their passkeys, see a held 12 ETH
// transfer decoded, approve it each with their passkey, and it runs; a
// third person without enrollment gets nothing; no session, no page.
func TestApprovalWithPasskeysInABrowser(t *testing.T) {
	e := newEnv(t)
	if out, err := e.admin("keys", "create", "treasury-1", "--alg", "ES256K", "--purpose", "eth", "--chain-ids", "1"); err != nil {
		t.Fatalf("keys create: %v %s", err, out)
	}
	out, err := e.admin("eth", "sign-tx", "--key", "treasury-1", "--tx",
		`{"to":"0x3535353535353535353535353535353535353535","value":"0xa688906bd8b00000","nonce":"0x0","gas":"0x5208","maxFeePerGas":"0x4a817c800","maxPriorityFeePerGas":"0x3b9aca00","chainId":"0x1"}`)
	m := regexp.MustCompile(`request ([0-9a-f-]{8,})`).FindStringSubmatch(out)
	if err == nil || m == nil {
		t.Fatalf("a 12 ETH transfer was not held: %v %s", err, out)
	}
	approvalID := m[1]

	// The rule requires passkeys: an officer's client certificate alone
	// decides nothing.
	carol := func(args ...string) (string, error) {
		return e.run(append(args, "--addr", e.srv.GRPCAddr, "--tls-ca", filepath.Join(e.dir, "tls", "ca.crt"),
			"--tls-cert", filepath.Join(e.dir, "carol", "client.crt"), "--tls-key", filepath.Join(e.dir, "carol", "client.key"))...)
	}
	if out, err := carol("approvals", "approve", approvalID); err == nil || !strings.Contains(out, "requires a passkey") {
		t.Errorf("an approval without a passkey under require: passkey: %v %s", err, out)
	}

	// Only identities the policy names can be enrolled: not one a
	// pattern merely matches.
	if out, err := e.admin("console", "enroll", "spiffe://example.org/treasury-officer/x1"); err == nil || !strings.Contains(out, "not named in the policy") {
		t.Errorf("enrolling an identity the policy does not name: %v %s", err, out)
	}

	alice, bob := e.browser(), e.browser()
	e.enrollAndSignIn(alice, "spiffe://example.org/treasury-officer/alice")
	e.enrollAndSignIn(bob, "spiffe://example.org/treasury-officer/bob")

	if err := chromedp.Do(alice, chromedp.Navigate(e.origin+"/approvals")); err != nil {
		t.Fatal(err)
	}
	page := text(alice, "main")
	for _, want := range []string{approvalID, "12 ETH", "0x3535353535353535353535353535353535353535", "spiffe://example.org/admin", "0 of 2"} {
		if !strings.Contains(page, want) {
			t.Errorf("the approvals page lacks %q:\n%s", want, page)
		}
	}
	shot, err := chromedp.Run(alice, chromedp.FullScreenshot(100))
	if err != nil || len(shot) < 5000 {
		t.Errorf("a screenshot of the queue: %d bytes, %v", len(shot), err)
	}
	os.MkdirAll(filepath.Join("testdata", "artefacts"), 0o755) // kept for a look (not committed)
	os.WriteFile(filepath.Join("testdata", "artefacts", "approvals.png"), shot, 0o644)

	approve := func(ctx context.Context, want string) {
		t.Helper()
		sel := fmt.Sprintf(`button.decide[data-id=%q][data-decision="approve"]`, approvalID)
		if err := chromedp.Do(ctx, chromedp.Navigate(e.origin+"/approvals"), chromedp.Click(chromedp.CSS(sel)), shows(want)); err != nil {
			t.Fatalf("approving: %v (status %q)", err, text(ctx, "#status"))
		}
	}
	approve(alice, "1 of 2")
	approve(bob, "Nothing waits")
	res, err := e.admin("approvals", "result", approvalID)
	if err != nil || !strings.HasPrefix(strings.TrimSpace(res), "0x02") {
		t.Fatalf("the approved transfer's result: %v %s", err, res)
	}
	audit, _ := os.ReadFile(filepath.Join(e.dir, "audit.jsonl"))
	if n := strings.Count(string(audit), `"passkey_assertion"`); n != 2 {
		t.Errorf("%d approvals carry a passkey assertion in the audit log, want 2", n)
	}
	// sigil approvals show checks each vote's assertion itself, over
	// the request's bytes it shows.
	carolShow, err := carol("approvals", "show", approvalID)
	if err != nil || strings.Count(carolShow, "verified here, over this approval and payload sha256") != 2 || strings.Contains(carolShow, "NOT VERIFIED") {
		t.Errorf("approvals show of the passkey votes: %v\n%s", err, carolShow)
	}
	// Offline, from the audit log alone: both assertions verify against
	// the officers' registration records.
	if out, err := e.admin("audit", "verify", filepath.Join(e.dir, "audit.jsonl")); err != nil || !strings.Contains(out, "2 passkey decision(s) verified") {
		t.Errorf("sigil audit verify of the passkey decisions: %v\n%s", err, out)
	}

	// Someone with a passkey nobody enrolled gets nothing.
	eve := e.browser()
	if err := chromedp.Do(eve, chromedp.Navigate(e.origin+"/login"), chromedp.Click(chromedp.ID("login")), status("Refused")); err != nil {
		t.Fatalf("an unenrolled sign-in: %v %q", err, text(eve, "#status"))
	}
	audit, _ = os.ReadFile(filepath.Join(e.dir, "audit.jsonl"))
	for op, want := range map[string]int{`"operation":"console.register","outcome":"allowed"`: 2, `"operation":"console.signin","outcome":"allowed"`: 2} {
		if n := strings.Count(string(audit), op); n < want {
			t.Errorf("%d audit records of %s, want %d", n, op, want)
		}
	}

	if err := chromedp.Do(eve, chromedp.Navigate(e.origin+"/approvals"), at("/login")); err != nil {
		t.Errorf("without a session /approvals does not lead to /login: %v", err)
	}

	// Bob's passkey revoked: his session ends at its next page, and his
	// passkey signs in no more.
	list, err := e.admin("console", "enrollments", "--json")
	var enrolled struct {
		Enrollments []struct {
			CredentialID string `json:"credential_id"`
			Identity     string `json:"identity"`
		} `json:"enrollments"`
	}
	if err != nil || json.Unmarshal([]byte(list), &enrolled) != nil {
		t.Fatalf("console enrollments: %v %s", err, list)
	}
	revoked := 0
	for _, en := range enrolled.Enrollments {
		if en.Identity == "spiffe://example.org/treasury-officer/bob" {
			args := append([]string{"console", "revoke"}, e.adminFlags()...)
			if out, err := e.run(append(args, "--", en.CredentialID)...); err != nil { // an ID may begin with '-'
				t.Fatalf("console revoke: %v %s", err, out)
			}
			revoked++
		}
	}
	if revoked != 1 {
		t.Fatalf("%d passkeys of bob's enrolled: %s", revoked, list)
	}
	if err := chromedp.Do(bob, chromedp.Navigate(e.origin+"/approvals"), at("/login")); err != nil {
		t.Errorf("a revoked passkey's session still shows /approvals: %v", err)
	}
	if err := chromedp.Do(bob, chromedp.Click(chromedp.ID("login")), status("Refused")); err != nil {
		t.Errorf("a revoked passkey signing in: %v %q", err, text(bob, "#status"))
	}
	if err := chromedp.Do(alice, chromedp.Navigate(e.origin+"/approvals"), at("/approvals")); err != nil {
		t.Errorf("alice's session after bob's revocation: %v", err)
	}

	// A link not yet used is listed by its ID and cancelled: opened after,
	// it registers nothing.
	out, err = e.admin("console", "enroll", "spiffe://example.org/treasury-officer/carol", "--json")
	var link struct {
		URL    string `json:"url"`
		LinkID string `json:"link_id"`
	}
	if err != nil || json.Unmarshal([]byte(out), &link) != nil || link.LinkID == "" {
		t.Fatalf("console enroll --json: %v %s", err, out)
	}
	if out, err := e.admin("console", "enrollments"); err != nil || !strings.Contains(out, link.LinkID) || strings.Contains(out, strings.TrimPrefix(link.URL, e.origin+"/enroll#")) {
		t.Errorf("the pending link in console enrollments (by ID, never the token): %v\n%s", err, out)
	}
	if out, err := e.admin("console", "revoke", "--link", link.LinkID); err != nil || !strings.Contains(out, "cancelled link") {
		t.Fatalf("console revoke --link: %v %s", err, out)
	}
	if out, err := e.admin("console", "enrollments"); err != nil || strings.Contains(out, link.LinkID) {
		t.Errorf("a cancelled link still listed: %v\n%s", err, out)
	}
	carolsBrowser := e.browser()
	if err := chromedp.Do(carolsBrowser, chromedp.Navigate(link.URL), chromedp.Click(chromedp.ID("enroll")), status("Refused")); err != nil {
		t.Errorf("a cancelled link opened: %v %q", err, text(carolsBrowser, "#status"))
	}
}

// The console's HTTP edge: every answer forbids inline script and
// framing; a state change from another origin, or none, is refused.
func TestConsoleEdge(t *testing.T) {
	e := newEnv(t)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(e.origin + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP: %q", csp)
	}
	for _, origin := range []string{"https://evil.example", ""} {
		req, _ := http.NewRequest("POST", e.origin+"/api/login/begin", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a POST from origin %q: %d", origin, resp.StatusCode)
		}
	}
	resp, err = c.Get(e.origin + "/approvals")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("/approvals without a session: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// The operator's pages in the browser: the keys list filtered by
// purpose and owner; a JWT key's page with its rotation timeline (an SVG
// with a span per generation state and the next rotation), its
// screenshot kept and not blank; the JWK Sets page with the kids
// published; the audit page with each checkpoint's signature verified.
// A key label holding markup renders as text.
func TestOperatorPagesInABrowser(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{
		{"keys", "create", "web-jwt", "--alg", "ES256", "--purpose", "jwt", "--rotate-every", "2h", "--publish-ahead", "30m", "--owner", "web team"},
		{"keys", "create", "web-raw", "--alg", "ES256", "--owner", "web team", "--label", `note=<img src=x onerror=alert(1)>`},
		{"keys", "create", "other-raw", "--alg", "ES256", "--owner", "someone else"},
		{"keys", "rotate", "web-jwt"},
	} {
		if out, err := e.admin(args...); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	ops := e.browser()
	e.enrollAndSignIn(ops, "spiffe://example.org/admin")

	if err := chromedp.Do(ops, chromedp.Navigate(e.origin+"/keys?owner=web+team&purpose=raw")); err != nil {
		t.Fatal(err)
	}
	if page := text(ops, "main"); !strings.Contains(page, "1 keys match") || !strings.Contains(page, "web-raw") || strings.Contains(page, "other-raw") || strings.Contains(page, "web-jwt") {
		t.Errorf("the keys page filtered by owner and purpose:\n%s", page)
	}

	if err := chromedp.Do(ops, chromedp.Navigate(e.origin+"/keys/web-jwt")); err != nil {
		t.Fatal(err)
	}
	for class, want := range map[string]int{"rect.span.active": 1, "rect.span.pending": 1, "rect.span.predicted": 1, "rect.window": 1, "line.mark": 1} {
		n, err := chromedp.Run(ops, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, ".timeline svg "+class)))
		if err != nil || n < want {
			t.Errorf("the timeline has %d %s, want %d (%v)", n, class, want, err)
		}
	}
	if page := text(ops, "main"); !strings.Contains(page, "Rotates every") || !strings.Contains(page, "2h0m0s") || !strings.Contains(page, "pending") {
		t.Errorf("the key page:\n%s", page)
	}
	shot, err := chromedp.Run(ops, chromedp.FullScreenshot(100))
	if err != nil || len(shot) < 5000 {
		t.Errorf("a screenshot of the timeline: %d bytes, %v", len(shot), err)
	}
	os.MkdirAll(filepath.Join("testdata", "artefacts"), 0o755)
	os.WriteFile(filepath.Join("testdata", "artefacts", "timeline.png"), shot, 0o644)

	if err := chromedp.Do(ops, chromedp.Navigate(e.origin+"/keys/web-raw")); err != nil {
		t.Fatal(err)
	}
	if n, err := chromedp.Run(ops, chromedp.Evaluate[int](`document.querySelectorAll("main img").length`)); err != nil || n != 0 || !strings.Contains(text(ops, "main"), "<img src=x") {
		t.Errorf("a label holding markup: %d img elements, %v\n%s", n, err, text(ops, "main"))
	}

	if err := chromedp.Do(ops, chromedp.Navigate(e.origin+"/jwks")); err != nil {
		t.Fatal(err)
	}
	if page := text(ops, "main"); !strings.Contains(page, "default") || !strings.Contains(page, "web-jwt") || strings.Count(page, "(active)")+strings.Count(page, "(pending)") < 2 {
		t.Errorf("the JWK Sets page:\n%s", page)
	}

	if err := chromedp.Do(ops, chromedp.Navigate(e.origin+"/audit")); err != nil {
		t.Fatal(err)
	}
	if page := text(ops, "main"); !strings.Contains(page, "the signature verifies with the audit key") || strings.Contains(page, "NOT VERIFIED") ||
		!strings.Contains(page, "the chain holds over these records") || !strings.Contains(page, "keys.admin") || !strings.Contains(page, "web-jwt") || strings.Contains(page, "CHAIN BROKEN") {
		t.Errorf("the audit page:\n%s", page)
	}

	if err := chromedp.Do(ops, chromedp.Navigate(e.origin+"/health")); err != nil {
		t.Fatal(err)
	}
	if page, _ := chromedp.Run(ops, chromedp.Evaluate[string](`document.querySelector("main").innerText`)); !strings.Contains(page, "Every dependency is up") || !strings.Contains(page, "backend\thsm\tup") || !strings.Contains(page, "store\tkeyring store\tup") || strings.Contains(page, "DOWN") {
		t.Errorf("the health page:\n%q", page)
	}

	// At 200 % zoom (a 1280 px window's page laid out in 640 CSS px) no
	// page scrolls sideways, and the keyboard alone reaches every link,
	// button and field, each showing where the focus is.
	for _, path := range []string{"/approvals", "/keys", "/keys/web-jwt", "/jwks", "/audit", "/health"} {
		keyboardAndZoom(t, ops, e.origin+path)
	}
	keyboardAndZoom(t, e.browser(), e.origin+"/login")
}

// focusable is every element the keyboard must reach on a page.
const focusable = `a[href], button, input, select, textarea`

// keyboardAndZoom checks page url at 200 % zoom: nothing wider than the
// window, and Tab reaching every focusable element with a visible focus.
func keyboardAndZoom(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(640, 900, chromedp.EmulateScale(2)), chromedp.Navigate(url)); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	if over, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - document.documentElement.clientWidth`)); err != nil || over > 1 {
		t.Errorf("%s at 200 %% zoom is %d px wider than the window (%v)", url, over, err)
	}
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("`+focusable+`").length`))
	if err != nil || n == 0 {
		t.Fatalf("%s: %d focusable elements (%v)", url, n, err)
	}
	reached := map[int]bool{}
	for range n + 1 {
		if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Tab)); err != nil {
			t.Fatal(err)
		}
		at, err := chromedp.Run(ctx, chromedp.Evaluate[[]any](`(() => { const e = document.activeElement;
			return [[...document.querySelectorAll("`+focusable+`")].indexOf(e), getComputedStyle(e).outlineStyle]; })()`))
		if err != nil || len(at) != 2 {
			t.Fatalf("%s: the focused element: %v", url, err)
		}
		if i, _ := at[0].(float64); i >= 0 {
			reached[int(i)] = true
			if at[1] == "none" {
				t.Errorf("%s: element %d shows no focus", url, int(i))
			}
		}
	}
	if len(reached) != n {
		t.Errorf("%s: Tab reached %d of %d links, buttons and fields", url, len(reached), n)
	}
}
