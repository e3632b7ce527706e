package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/signer"
	_ "github.com/sigil-hsm/sigil/signer/pkcs11"
)

const base = `
grpc:
  addr: 127.0.0.1:7443
  tls: {cert: /c, key: /k, client_ca: /ca}
audit: {path: /tmp/audit.jsonl}
http:
  public_addr: 127.0.0.1:7080
  admin_addr: 127.0.0.1:7081
store: {type: bbolt, path: /tmp/k.db}
backends:
  hsm-a:
    type: pkcs11
    module: /usr/lib/softhsm/libsofthsm2.so
    token: sigil
    pin: PIN_LINE
`

func parse(t *testing.T, yaml string, dev bool) (*Config, error) {
	t.Helper()
	return Parse(strings.NewReader(yaml), dev)
}

func TestParseValid(t *testing.T) {
	c, err := parse(t, strings.Replace(base, "PIN_LINE", "env:SIGIL_HSM_PIN", 1), true)
	if err != nil {
		t.Fatal(err)
	}
	if c.DefaultBackend != "hsm-a" || c.Backends["hsm-a"].Type != "pkcs11" || c.Store.Path != "/tmp/k.db" {
		t.Fatalf("%+v", c)
	}
}

// A webhook over https, or http to loopback, with its secret a
// reference, is taken.
func TestNotifyWebhooks(t *testing.T) {
	ok := strings.Replace(base, "PIN_LINE", "env:SIGIL_HSM_PIN", 1)
	c, err := parse(t, ok+`notify:
  - {url: https://hooks.example.org/sigil, secret: env:SIGIL_WEBHOOK_SECRET, events: [approval.held, audit.tamper]}
  - {url: "http://127.0.0.1:9000/hook", secret: file:/run/secrets/hook, events: [backend.down]}
`, true)
	if err != nil || len(c.Notify) != 2 || c.Notify[0].Events[1] != "audit.tamper" {
		t.Fatalf("%v %+v", err, c)
	}
}

func TestParseRefusals(t *testing.T) {
	ok := strings.Replace(base, "PIN_LINE", "env:SIGIL_HSM_PIN", 1)
	cases := map[string]struct {
		yaml string
		dev  bool
		want string // the field the error must name
	}{
		"unknown top-level field":         {ok + "colour: blue\n", true, "colour"},
		"no TLS":                          {strings.Replace(ok, "  tls: {cert: /c, key: /k, client_ca: /ca}\n", "", 1), true, "grpc.tls"},
		"no policy outside dev":           {ok, false, "policy"},
		"no audit":                        {strings.Replace(ok, "audit: {path: /tmp/audit.jsonl}\n", "", 1), true, "audit"},
		"bad address":                     {strings.Replace(ok, "127.0.0.1:7443", "nowhere", 1), true, "grpc.addr"},
		"store type":                      {strings.Replace(ok, "type: bbolt", "type: zookeeper", 1), true, "store.type"},
		"etcd without endpoints":          {strings.Replace(ok, "type: bbolt", "type: etcd", 1), true, "store.endpoints"},
		"default backend":                 {ok + "default_backend: aws-eu\n", true, "default_backend"},
		"backend without type":            {strings.Replace(ok, "    type: pkcs11\n", "", 1), true, "type"},
		"webhook with a literal secret":   {ok + "notify: [{url: https://h.example/x, secret: hunter2, events: [approval.held]}]\n", true, "notify[0].secret"},
		"webhook in clear over a network": {ok + "notify: [{url: http://h.example/x, secret: env:S, events: [approval.held]}]\n", true, "notify[0].url"},
		"webhook of no event":             {ok + "notify: [{url: https://h.example/x, secret: env:S}]\n", true, "notify[0].events"},
		"webhook of an unknown event":     {ok + "notify: [{url: https://h.example/x, secret: env:S, events: [key.created]}]\n", true, "key.created"},
	}
	for name, c := range cases {
		_, err := parse(t, c.yaml, c.dev)
		if !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an InvalidArgument naming %q", name, err, c.want)
		}
	}
}

func TestBackendSectionIsStrictAndPINsAreNeverLiteral(t *testing.T) {
	const literal = "483920"
	c, err := parse(t, strings.Replace(base, "PIN_LINE", literal, 1), true)
	if err != nil {
		t.Fatal(err)
	}
	b := c.Backends["hsm-a"]
	_, err = signer.Open(context.Background(), b.Type, "hsm-a", b.Decode)
	if err == nil || !strings.Contains(err.Error(), "pin") || strings.Contains(err.Error(), literal) {
		t.Fatalf("literal PIN: got %v; want an error naming the field, not the value", err)
	}
	c, err = parse(t, strings.Replace(base, "PIN_LINE", "env:X\n    slot: 3", 1), true)
	if err != nil {
		t.Fatal(err)
	}
	b = c.Backends["hsm-a"]
	_, err = signer.Open(context.Background(), b.Type, "hsm-a", b.Decode)
	if err == nil || !strings.Contains(err.Error(), "slot") {
		t.Fatalf("unknown backend field: %v", err)
	}
}

func TestServerTLSRefusesAReadableKey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "server.key")
	os.WriteFile(key, []byte("not used"), 0o644)
	_, err := mtls.ServerConfig(mtls.Files{Cert: filepath.Join(dir, "c"), Key: key, ClientCA: filepath.Join(dir, "ca")}, nil)
	if !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), "grpc.tls.key") {
		t.Fatalf("group/world-readable key: %v", err)
	}
}

func TestEthUpstreamSettings(t *testing.T) {
	ok := strings.Replace(base, "PIN_LINE", "env:SIGIL_HSM_PIN", 1) + "ethrpc:\n  addr: 127.0.0.1:7545\n  upstream:\n"
	good := []string{
		"    url: https://node.internal:8545\n    headers: {Authorization: env:RPC_AUTH, X-Client: sigil}\n    timeout: 5s\n",
		"    url: env:RPC_URL\n",
	}
	for _, u := range good {
		if _, err := parse(t, ok+u, true); err != nil {
			t.Errorf("%q: %v", u, err)
		}
	}
	for u, want := range map[string]string{
		"    url: ftp://node\n": "ethrpc.upstream.url",
		"    url: https://node\n    headers: {Authorization: Bearer abc}\n": "headers.Authorization",
		"    url: https://node\n    headers: {X-Api-Key: abc}\n":            "headers.X-Api-Key",
		"    url: https://node\n    timeout: 1h\n":                          "timeout",
		"    url: https://user:abc@node\n":                                  "ethrpc.upstream.url",
		"    url: https://node/?apikey=abc\n":                               "ethrpc.upstream.url",
		"    url: https://node\n    headers: {Proxy-Authorization: abc}\n":  "headers.Proxy-Authorization",
		"    url: https://node\n    headers: {Cookie: abc}\n":               "headers.Cookie",
	} {
		_, err := parse(t, ok+u, true)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "abc") {
			t.Errorf("%q: got %v, want an error naming %q and quoting no value", u, err, want)
		}
	}
}
