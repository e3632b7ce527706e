// Package purpose is the contract a signing purpose implements to plug
// into Sigil, as backends plug in through package signer. A purpose says
// what a key may sign (raw digests, JWTs, Ethereum transactions) and owns
// everything about it: its policy type and the policy's proto form, how
// its keys rotate and what is derived from their public keys (the
// keyring.Purpose half), its gRPC service, the authorization operation of
// each method, and what a request asks to have signed (for the audit
// record). The keyring holds each key's policy opaquely; the server knows
// purposes only through this interface.
//
// raw, jwt and eth are its subpackages. Adding a purpose is one package
// that calls Register at init (and is imported by cmd/sigil through
// purpose/all), plus its proto.
package purpose

import (
	"context"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/tracing"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

// Purpose is a signing purpose.
type Purpose interface {
	keyring.Purpose
	// Service returns the purpose's gRPC service, built on d.
	Service(d Deps) (*grpc.ServiceDesc, any)
	// Operations names the authorization operation of every method of
	// its service, by full method name. A method missing is refused; a
	// method another purpose or the server already has panics at start.
	Operations() map[string]authz.Op
	// Payload returns what req asks to have signed (only its hash is
	// audited); nil if req is none of the purpose's signing requests.
	Payload(req any) []byte
	// RequestedPolicy returns the policy of this purpose that a
	// CreateKey or UpdateKeyPolicy request carries, nil if none.
	RequestedPolicy(req PolicyRequest) (any, error)
	// Describe sets what a Key message tells of this purpose's key k: its
	// policy and attributes.
	Describe(k *keyring.Key, out *sigilv1.Key)
}

// Keyless is the ability of a purpose to serve methods that name no key
// (JWK Sets, say): they are authorized as listings are, by a rule on any
// key. Every other method of a purpose must name the key it uses in its
// request's key_id (or id) field; a request that names none is refused.
type Keyless interface{ KeylessMethods() []string }

// Batches is the ability of a purpose to serve batch methods, whose
// items are each a call of another method (see Batch). The server admits
// a batch on its namespace but spends no quota on it and holds it under
// no approval rule: each item is decided, charged and held as a call of
// its own. A batch method names no key.
type Batches interface{ BatchMethods() []string }

// Invoker runs a request through the server's whole path in process:
// identity, authorization, request checks, the audit record and the
// handler. A purpose that speaks a second protocol (Ethereum JSON-RPC)
// translates to its gRPC requests and invokes them, so every rule of the
// first holds for the second.
//
// Key IDs are those of the namespace of the call ctx describes (see
// HTTPContext), as a gRPC client names them.
type Invoker interface {
	// Invoke runs req as a call of fullMethod from the caller ctx
	// describes and fills resp.
	Invoke(ctx context.Context, fullMethod string, req, resp proto.Message) error
	// Allowed answers nil if that caller may do op on key id: else
	// Unauthenticated (its certificate) or PermissionDenied.
	Allowed(ctx context.Context, op authz.Op, id string) error
	// HTTPContext describes an HTTP request's client certificate as
	// Invoke and Allowed expect.
	HTTPContext(r *http.Request) context.Context
	// Charge authorizes op on key id ("" for a listing) and spends one
	// request of the caller's quota, for a call no gRPC method stands for.
	Charge(ctx context.Context, op authz.Op, id string) error
	// Record audits a call no gRPC method stands for (an account
	// listing, a request refused before any); on error the answer is
	// withheld.
	Record(ctx context.Context, operation, keyID string, err error, details ...string) error
	// Status maps err to the gRPC status it is answered with.
	Status(err error) error
}

// HTTPAPI is the ability of a purpose to serve a protocol of its own
// (Ethereum JSON-RPC) on a listener of its own, every call made through
// inv.
type HTTPAPI interface {
	HTTPHandler(inv Invoker, d Deps) http.Handler
}

// Reviewer is the ability of a purpose to describe its requests for
// dual control: the facts the approval rules' conditions test (the value
// a transaction moves, its recipient) and a summary approvers read before
// they approve. A purpose without it has its requests held on the
// operation alone, summarised by key and method.
type Reviewer interface {
	// Review describes req, a request of method; an error means req is
	// not one the purpose would serve (it is then answered, not held).
	// Facts a condition alone needs are read only if tested(condition)
	// says a rule tests it (it is asked on every request a rule covers);
	// the summary is asked for with every condition tested.
	Review(ctx context.Context, d Deps, method string, req any, tested func(cond string) bool) (authz.Facts, []approval.Field, error)
}

// Conditioned is the ability of a reviewing purpose to offer approval
// conditions (authz.Cond*) on its operations: it names those each can be
// tested on. Without it, its requests are held on their operation alone.
type Conditioned interface {
	Conditions() map[authz.Op][]string
}

// Loosener is the ability of a purpose to tell whether a new policy of
// its keys allows something the old did not (a higher limit, another
// chain or recipient, a rule removed). Without it every policy change
// counts as loosening one.
type Loosener interface {
	Loosens(old, updated any) bool
}

// Scoped is the ability of a purpose to refuse a policy change that only
// an admin of every key may make (publishing a jwt key in the issuer-wide
// default JWK Set): cur is the key's policy (nil for a new key), next the
// one asked for. It is asked again inside the atomic update that applies
// a change.
type Scoped interface {
	CheckScope(ctx context.Context, d Deps, keyID string, alg signer.Algorithm, cur, next any) error
}

// Metrics is the ability of a purpose to export metrics of its own (an
// Ethereum key's spending against its limit), read at each scrape.
type Metrics interface {
	Collectors(d Deps) []prometheus.Collector
}

// PolicyRequest is what CreateKeyRequest and UpdateKeyPolicyRequest have
// in common: the policy fields. A purpose without a field of its own
// reads Policy, an Any holding its policy message.
type PolicyRequest interface {
	GetJwtPolicy() *sigilv1.JWTPolicy
	GetEthPolicy() *sigilv1.EthPolicy
	GetPolicy() *anypb.Any
}

// Deps are what a purpose's service is built on.
type Deps struct {
	Keys *keyring.Keyring
	// Ledger counts spending against limits; nil if the store keeps none.
	Ledger keyring.Ledger
	// Anchors keeps small named values beside the keys (JWK Sets).
	Anchors keyring.Anchors
	Now     func() time.Time
	Log     *slog.Logger
	// OnGeneration learns which generation served a request (for its
	// audit record).
	OnGeneration func(ctx context.Context, generation int)
	// OnDetail notes a detail of a request's use of a key in its audit
	// record (never a payload or a secret).
	OnDetail func(ctx context.Context, name, value string)
	// OnSign learns of every signature made or tried with sg (for the
	// metrics).
	OnSign func(sg keyring.Signing, err error, took time.Duration)
	// Each runs reqs as calls of method through the one access path, each
	// answered as if it came alone (authorization, quota, approval rules,
	// audit record; items on one key are decided together, charged per
	// item), concurrently: what a batch RPC is made of. It returns each
	// call's response, made by newResp, or error (a gRPC status).
	Each func(ctx context.Context, method string, reqs []proto.Message, newResp func() proto.Message) ([]proto.Message, []error)
	// CanRead reports whether the caller may read key id: a listing a
	// purpose serves shows only those keys. Nil allows every key.
	CanRead func(ctx context.Context, id string) bool
	// Covering reports which identity of the caller a rule allows op on
	// every key ID each of patterns can match: a keyless admin call that
	// admits keys by pattern needs it. Nil allows everything, as "*".
	Covering func(ctx context.Context, op authz.Op, patterns []string) (string, bool)
	// Settings are each purpose's own settings from the configuration,
	// by purpose name (eth: its upstream node); a purpose reads its own.
	Settings map[string]any
}

// Covers is Covering, or everything allowed when it is nil.
func (d Deps) Covers(ctx context.Context, op authz.Op, patterns []string) (string, bool) {
	if d.Covering == nil {
		return "", true
	}
	return d.Covering(ctx, op, patterns)
}

// Visible reports whether the caller may read key id.
func (d Deps) Visible(ctx context.Context, id string) bool {
	return d.CanRead == nil || d.CanRead(ctx, id)
}

// Clock returns the time now, by Now if set.
func (d Deps) Clock() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Note notes a detail of the request in its audit record.
func (d Deps) Note(ctx context.Context, name, value string) {
	if d.OnDetail != nil {
		d.OnDetail(ctx, name, value)
	}
}

// Served reports that generation n served the request.
func (d Deps) Served(ctx context.Context, n int) {
	if d.OnGeneration != nil {
		d.OnGeneration(ctx, n)
	}
}

// Sign runs call, the signing work of one request with sg, and reports
// it: in a span naming the backend, algorithm, key and generation.
func (d Deps) Sign(ctx context.Context, sg keyring.Signing, call func(ctx context.Context) error) error {
	d.Served(ctx, sg.Generation.Number)
	ctx, span := tracing.Start(ctx, "sigil.backend_sign")
	defer span.End()
	if span.IsRecording() { // attributes cost allocations: only for a span that keeps them
		span.SetAttributes(attribute.String("sigil.backend", sg.Key.Backend), attribute.String("sigil.algorithm", string(sg.Key.Algorithm)),
			attribute.String("sigil.key_id", sg.Key.ID), attribute.Int("sigil.generation", sg.Generation.Number))
	}
	start := time.Now()
	err := call(ctx)
	if err != nil {
		span.SetStatus(codes.Error, "signing failed")
	}
	if d.OnSign != nil {
		d.OnSign(sg, err, time.Since(start))
	}
	return err
}

var registry = struct {
	sync.RWMutex
	m map[string]Purpose
}{m: map[string]Purpose{}}

// Register makes p known to the keyring, the server and the policy file
// (its operations). It panics if the name is taken, as that is a
// programming error found at init.
func Register(p Purpose) {
	keyring.Register(p)
	ops := make([]authz.Op, 0, len(p.Operations()))
	for _, op := range p.Operations() {
		ops = append(ops, op)
	}
	authz.RegisterOps(ops...)
	if c, ok := p.(Conditioned); ok {
		for op, names := range c.Conditions() {
			authz.RegisterConditions(op, names...)
		}
	}
	registry.Lock()
	defer registry.Unlock()
	registry.m[p.Name()] = p
}

// All returns every registered purpose, by name.
func All() []Purpose {
	registry.RLock()
	defer registry.RUnlock()
	out := make([]Purpose, 0, len(registry.m))
	for _, p := range registry.m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// NamespaceHolder is the ability of a purpose to keep things of its own
// in a namespace (jwt: its JWK Sets): a namespace is deleted only when
// Empty answers nil for it.
type NamespaceHolder interface {
	Empty(ctx context.Context, d Deps, ns string) error
}

// Fenced is the ability of a purpose whose keys keep a ledger that a
// restore from a backup leaves behind the present (eth: the nonces and
// spends signed since the backup): a restore fences each of its keys'
// ledgers (keyring.Fence), and its signing refuses until the ledger is
// reconciled. Reconcile names the command that does it for key id.
type Fenced interface {
	Reconcile(id string) string
}

// Committer is the ability of a purpose to act on a request's answer
// only once its audit record is written (eth: submitting a signed
// transaction to the node, which cannot be withheld once it is out). The
// server calls Committed after writing the record and before answering;
// a note it returns is written as a second record of the same request.
type Committer interface {
	Committed(ctx context.Context, d Deps, method string, req, resp any) (note string)
}
