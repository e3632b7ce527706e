// Package config reads the server's YAML configuration (CONFIG.md) strictly:
// an unknown field is an error naming it and its line. Each backend's
// section is decoded by the backend itself (signer.Open hands it a decode
// function), so this package knows no backend's fields.
//
// It is internal: the file format is the contract, not these types.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/notify"
	"github.com/sigil-hsm/sigil/internal/secret"
)

// Config is the whole configuration file.
type Config struct {
	GRPC           GRPC               `yaml:"grpc"`
	HTTP           HTTP               `yaml:"http"`
	EthRPC         EthRPC             `yaml:"ethrpc"`
	Store          Store              `yaml:"store"`
	Backends       map[string]Backend `yaml:"backends"`
	DefaultBackend string             `yaml:"default_backend"`
	Policy         string             `yaml:"policy"`
	Audit          *Audit             `yaml:"audit"`
	Keyring        Keyring            `yaml:"keyring"`
	Approvals      Approvals          `yaml:"approvals"`
	Log            Log                `yaml:"log"`
	Console        *Console           `yaml:"console"`
	Notify         []Notify           `yaml:"notify"`
	Tracing        Tracing            `yaml:"tracing"`
}

// Tracing turns OpenTelemetry tracing on; where spans go is the standard
// OTEL_* variables' (OTEL_EXPORTER_OTLP_ENDPOINT, …).
type Tracing struct {
	Enabled bool `yaml:"enabled"`
	// SampleRatio is the share of traces started here that are exported
	// (0.01 if unset); a caller's sampled trace is always continued.
	SampleRatio *float64 `yaml:"sample_ratio"`
}

// Ratio is the sample ratio, its default filled in.
func (t Tracing) Ratio() float64 {
	if t.SampleRatio == nil {
		return 0.01
	}
	return *t.SampleRatio
}

// Notify is one webhook events are delivered to (see package notify).
type Notify struct {
	// URL is https://…; http:// only to a loopback address.
	URL string `yaml:"url"`
	// Secret is the HMAC-SHA256 key the body is signed with: an env: or
	// file: reference, never a literal.
	Secret string `yaml:"secret"`
	// Events are the events it wants (notify.Events).
	Events []string `yaml:"events"`
}

// Console is the operator and approver console's listener: HTTPS with
// grpc.tls's server certificate (no client certificate: people sign in
// with passkeys). Off if absent.
type Console struct {
	Addr string `yaml:"addr"`
	// Origin is the URL people open, https://HOST[:PORT]: WebAuthn's
	// origin, which every state change must come from.
	Origin string `yaml:"origin"`
	// RPID is WebAuthn's relying party ID; Origin's host if empty.
	RPID string `yaml:"rp_id"`
}

// Approvals tunes how approved requests (dual control, see the policy
// file) are run; every field has a default (zero means it).
type Approvals struct {
	// RunLease is how long a replica's claim to run an approved request
	// lasts; a run gets half of it, and a request whose runner died is
	// run again once it lapses. 60s; at least 2s.
	RunLease time.Duration `yaml:"run_lease"`
	// SweepInterval is how often each replica looks for approved requests
	// nobody runs; 10s.
	SweepInterval time.Duration `yaml:"sweep_interval"`
}

// Log sets how much the server logs.
type Log struct {
	Level string `yaml:"level"` // debug, info (the default), warn or error
}

// Keyring tunes how long dead generations keep their objects and how the
// keyring repairs itself; every field has a default (zero means it).
type Keyring struct {
	Retention     time.Duration `yaml:"retention"`      // retired and revoked generations' objects; 168h
	SweepInterval time.Duration `yaml:"sweep_interval"` // listing backends for unrecorded objects; 10m
	OrphanGrace   time.Duration `yaml:"orphan_grace"`   // an unrecorded object's age before it is destroyed; 10m
	CreatingGrace time.Duration `yaml:"creating_grace"` // an unfinished creation's age before rollback (etcd); 2m
}

// GRPC is the gRPC listener.
type GRPC struct {
	Addr string `yaml:"addr"`
	TLS  *TLS   `yaml:"tls"`
}

// HTTP is the two HTTP listeners: public (JWK Sets, the audit public
// key; meant for relying parties) and admin (health, readiness, metrics;
// for the operator's network only).
type HTTP struct {
	PublicAddr string `yaml:"public_addr"`
	AdminAddr  string `yaml:"admin_addr"`
}

// EthRPC is the optional Ethereum JSON-RPC endpoint (Web3Signer's eth1
// methods and clef's external API), served with grpc.tls: the same
// server certificate, client CA, identities and policy.
type EthRPC struct {
	Addr string `yaml:"addr"` // off if empty
	// Upstream is an execution client behind the endpoint; none if nil.
	Upstream *Upstream `yaml:"upstream"`
}

// Upstream is the execution client the Ethereum JSON-RPC endpoint
// forwards the node's methods to and submits transactions through.
type Upstream struct {
	// URL is http(s)://…, or an env:/file: reference when it carries a
	// hosted provider's key.
	URL string `yaml:"url"`
	// Headers are sent with every call; a value that is a credential
	// (Authorization, or a name holding key, token or secret) must be an
	// env:/file: reference.
	Headers map[string]string `yaml:"headers"`
	Timeout time.Duration     `yaml:"timeout"` // 10s if zero
	TLS     *EtcdTLS          `yaml:"tls"`     // client certificate and CA, optional
}

// TLS holds the paths of the server's certificate, key and client CA.
type TLS struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"`
}

// Store selects the keyring store.
type Store struct {
	Type      string   `yaml:"type"`
	Path      string   `yaml:"path"`      // bbolt
	Endpoints []string `yaml:"endpoints"` // etcd
	Prefix    string   `yaml:"prefix"`    // etcd; /sigil/ if empty
	TLS       *EtcdTLS `yaml:"tls"`       // etcd client certificate, optional
	// Timeout bounds each store call (1.5s if zero): a request that needs
	// an unreachable store fails Unavailable within it, not at its own
	// deadline. HealthInterval is how often the store is probed (1s).
	Timeout        time.Duration `yaml:"timeout"`
	HealthInterval time.Duration `yaml:"health_interval"`
}

// EtcdTLS is Sigil's client certificate for etcd and the CA of etcd's.
type EtcdTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
}

// Audit is the audit log.
type Audit struct {
	Path    string `yaml:"path"`
	MaxSize int64  `yaml:"max_size"` // bytes before the file rotates; 64 MiB if 0
	// Replica names this server's chain (each replica keeps its own log
	// and checkpoints); required with etcd, "local" if empty with bbolt.
	Replica    string     `yaml:"replica"`
	Checkpoint Checkpoint `yaml:"checkpoint"`
}

// Checkpoint says how often the audit chain's head is signed.
type Checkpoint struct {
	Every    int           `yaml:"every"`    // records; 1000 if 0
	Interval time.Duration `yaml:"interval"` // 10s if 0
}

// Backend is one backends: entry: its type, and the rest of its section
// for the backend to decode.
type Backend struct {
	Type string
	node yaml.Node
}

// UnmarshalYAML keeps the section for Decode.
func (b *Backend) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a backend must be a mapping", n.Line)
	}
	b.node = yaml.Node{Kind: yaml.MappingNode, Tag: n.Tag}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "type" {
			b.Type = n.Content[i+1].Value
			continue
		}
		b.node.Content = append(b.node.Content, n.Content[i], n.Content[i+1])
	}
	if b.Type == "" {
		return fmt.Errorf("line %d: backend has no type", n.Line)
	}
	return nil
}

// Decode fills v from the backend's section, strictly.
func (b *Backend) Decode(v any) error {
	raw, err := yaml.Marshal(&b.node)
	if err != nil {
		return err
	}
	return decodeStrict(bytes.NewReader(raw), v)
}

func decodeStrict(r io.Reader, v any) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return errs.New(errs.InvalidArgument, "config: %w", err)
	}
	return nil
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "config: %w", err)
	}
	defer f.Close()
	return Parse(f, false)
}

// Parse reads a configuration and validates it. dev allows a plaintext
// gRPC listener, which --dev uses on loopback.
func Parse(r io.Reader, dev bool) (*Config, error) {
	var c Config
	if err := decodeStrict(r, &c); err != nil {
		return nil, err
	}
	if err := c.validate(dev); err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, err, "config")
	}
	return &c, nil
}

func (c *Config) validate(dev bool) error {
	if err := checkAddr("grpc.addr", c.GRPC.Addr); err != nil {
		return err
	}
	if err := checkAddr("http.public_addr", c.HTTP.PublicAddr); err != nil {
		return err
	}
	if err := checkAddr("http.admin_addr", c.HTTP.AdminAddr); err != nil {
		return err
	}
	if c.GRPC.TLS == nil {
		return errors.New("grpc.tls: required (cert, key, client_ca)")
	}
	if c.EthRPC.Addr != "" {
		if err := checkAddr("ethrpc.addr", c.EthRPC.Addr); err != nil {
			return err
		}
	}
	if u := c.EthRPC.Upstream; u != nil {
		if err := u.check(); err != nil {
			return err
		}
	}
	if con := c.Console; con != nil {
		if _, _, err := net.SplitHostPort(con.Addr); err != nil {
			return fmt.Errorf("console.addr: %q is not host:port", con.Addr)
		}
		if u, err := url.Parse(con.Origin); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return errors.New("console.origin: want https://HOST[:PORT], the URL people open (WebAuthn's origin)")
		}
		con.Origin = strings.TrimSuffix(con.Origin, "/")
	}
	if r := c.Tracing.Ratio(); r < 0 || r > 1 {
		return fmt.Errorf("tracing.sample_ratio: %v is not between 0 and 1", r)
	}
	for i, n := range c.Notify {
		if err := n.check(fmt.Sprintf("notify[%d]", i)); err != nil {
			return err
		}
	}
	switch c.Store.Type {
	case "", "bbolt":
		if c.Store.Path == "" {
			return errors.New("store.path: missing")
		}
	case "etcd":
		if len(c.Store.Endpoints) == 0 {
			return errors.New("store.endpoints: missing")
		}
	default:
		return fmt.Errorf("store.type: %q is not a store (want bbolt or etcd)", c.Store.Type)
	}
	if t := c.Store.Timeout; t != 0 && (t < 100*time.Millisecond || t > time.Minute) {
		return fmt.Errorf("store.timeout: %v out of range 100ms..1m", t)
	}
	if t := c.Store.HealthInterval; t != 0 && (t < 100*time.Millisecond || t > time.Minute) {
		return fmt.Errorf("store.health_interval: %v out of range 100ms..1m", t)
	}
	if len(c.Backends) == 0 {
		return errors.New("backends: at least one is needed")
	}
	if c.DefaultBackend == "" && len(c.Backends) == 1 {
		for name := range c.Backends {
			c.DefaultBackend = name
		}
	}
	if _, ok := c.Backends[c.DefaultBackend]; !ok {
		return fmt.Errorf("default_backend: %q is not one of the backends", c.DefaultBackend)
	}
	// --dev brings its own allow-the-dev-client policy; everywhere else
	// access is what the policy file says, and every decision is audited.
	if !dev && c.Policy == "" {
		return errors.New("policy: required (the file that says which client may do what)")
	}
	if c.Audit == nil || c.Audit.Path == "" {
		return errors.New("audit.path: required")
	}
	if c.Store.Type == "etcd" && c.Audit.Replica == "" {
		return errors.New("audit.replica: required with an etcd store: each replica keeps its own chain, under a name that must not change across restarts")
	}
	if cp := c.Audit.Checkpoint; cp.Every < 0 || cp.Interval < 0 {
		return errors.New("audit.checkpoint: every and interval must not be negative")
	}
	if c.Log.Level != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(c.Log.Level)); err != nil {
			return fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level)
		}
	}
	k := c.Keyring
	if k.Retention < 0 || k.SweepInterval < 0 || k.OrphanGrace < 0 || k.CreatingGrace < 0 {
		return errors.New("keyring: durations must not be negative")
	}
	if a := c.Approvals; a.RunLease != 0 && a.RunLease < 2*time.Second || a.SweepInterval < 0 {
		return errors.New("approvals: run_lease at least 2s, sweep_interval not negative")
	}
	return nil
}

// check refuses a webhook that would send events in clear over a
// network, sign them with a literal secret, or name no or unknown events.
func (n Notify) check(field string) error {
	u, err := url.Parse(n.URL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%s.url: want https://HOST/PATH", field)
	}
	if u.Scheme == "http" {
		if ip := net.ParseIP(u.Hostname()); (ip == nil || !ip.IsLoopback()) && u.Hostname() != "localhost" {
			return fmt.Errorf("%s.url: http only to a loopback address; https elsewhere (events name keys, requesters and amounts)", field)
		}
	}
	if !secret.IsRef(n.Secret) {
		return fmt.Errorf("%s.secret: required, as env:NAME or file:PATH (never a literal in the file)", field)
	}
	if err := secret.Ref(n.Secret).Validate(field + ".secret"); err != nil {
		return err
	}
	if len(n.Events) == 0 {
		return fmt.Errorf("%s.events: name at least one of %s", field, strings.Join(notify.Events, ", "))
	}
	for _, ev := range n.Events {
		if !slices.Contains(notify.Events, ev) {
			return fmt.Errorf("%s.events: %q is not one of %s", field, ev, strings.Join(notify.Events, ", "))
		}
	}
	return nil
}

func checkAddr(field, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s: %q is not host:port", field, addr)
	}
	return nil
}

// Files returns the TLS file paths.
func (t *TLS) Files() mtls.Files { return mtls.Files{Cert: t.Cert, Key: t.Key, ClientCA: t.ClientCA} }

// check validates the upstream's settings without reading its secrets.
func (u *Upstream) check() error {
	if secret.IsRef(u.URL) {
		if err := secret.Ref(u.URL).Validate("ethrpc.upstream.url"); err != nil {
			return err
		}
	} else if err := CheckUpstreamURL(u.URL); err != nil {
		return err
	} else if p, _ := url.Parse(u.URL); p.User != nil || p.RawQuery != "" {
		return errors.New("ethrpc.upstream.url: a URL with a user, password or query (a provider's key) must be a reference env:NAME or file:PATH, never a literal")
	}
	if u.Timeout < 0 || u.Timeout > 5*time.Minute {
		return errors.New("ethrpc.upstream.timeout: 0 (10s) to 5m")
	}
	for name, v := range u.Headers {
		if !secret.IsRef(v) && credentialHeader(name) {
			return fmt.Errorf("ethrpc.upstream.headers.%s: a credential must be a reference env:NAME or file:PATH, never a literal", name)
		}
		if secret.IsRef(v) {
			if err := secret.Ref(v).Validate("ethrpc.upstream.headers." + name); err != nil {
				return err
			}
		}
	}
	return nil
}

// CheckUpstreamURL checks an upstream URL, literal or read from its
// reference at start; its errors never quote it (it may carry a key).
func CheckUpstreamURL(raw string) error {
	if p, err := url.Parse(raw); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return errors.New("ethrpc.upstream.url: want http(s)://HOST[:PORT][/PATH], or env:NAME / file:PATH")
	}
	return nil
}

// credentialHeader reports whether a header named name carries a
// credential.
func credentialHeader(name string) bool {
	n := strings.ToLower(name)
	return n == "authorization" || n == "proxy-authorization" || n == "cookie" || strings.Contains(n, "key") || strings.Contains(n, "token") ||
		strings.Contains(n, "secret") || strings.Contains(n, "auth") || strings.Contains(n, "pass")
}
