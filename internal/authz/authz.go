// Package authz decides which client identity may do which operation on
// which key IDs, from the policy file of CONFIG.md. Anything no rule
// allows is denied. A rule names exactly one typed identity (package
// identity): a URI SAN, dns:NAME or cn:NAME; an untyped name is refused
// at load.
//
// The policy in force is swapped atomically on reload; a policy file that
// does not validate is refused and the old policy stays.
package authz

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/time/rate"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/internal/namespace"
)

// Op is an operation a rule can allow.
type Op string

// The operations on keys themselves; each purpose registers its own
// (sign.raw, sign.jwt, eth.sign_tx, ...) with RegisterOps.
const (
	KeysRead  Op = "keys.read"
	KeysAdmin Op = "keys.admin"
	// NamespacesRead and NamespacesAdmin are about a namespace itself
	// (reading it; creating, deleting, freezing, unfreezing it), decided
	// on the namespace the request names.
	NamespacesRead  Op = "ns.read"
	NamespacesAdmin Op = "ns.admin"
	// StoreBackup reads the whole keyring store (sigil backup), decided on
	// the audit key, sigil.audit, whose signature a backup carries.
	StoreBackup Op = "store.backup"
	// ConsoleAdmin enrolls people for the console (and lists and revokes
	// their passkeys), decided on sigil.console: an enrollment signs in
	// as the identity it names.
	ConsoleAdmin Op = "console.admin"
)

var known = struct {
	sync.RWMutex
	ops []Op
}{ops: []Op{ApprovalsApprove, KeysAdmin, KeysRead, NamespacesAdmin, NamespacesRead, StoreBackup, ConsoleAdmin}}

// RegisterOps makes operations known, so policy rules may name them; a
// rule naming an operation nobody registered is refused at load.
func RegisterOps(ops ...Op) {
	known.Lock()
	defer known.Unlock()
	for _, op := range ops {
		if !slices.Contains(known.ops, op) {
			known.ops = append(known.ops, op)
		}
	}
	slices.Sort(known.ops)
}

// Ops lists the known operations, sorted.
func Ops() []Op {
	known.RLock()
	defer known.RUnlock()
	return slices.Clone(known.ops)
}

// Rule allows an identity some operations on keys matching patterns.
type Rule struct {
	Identity string   `yaml:"identity"` // one typed identity: scheme://…, dns:NAME or cn:NAME
	Keys     []string `yaml:"keys"`     // key ID patterns: * and ? globs
	Allow    []Op     `yaml:"allow"`
	// Namespaces are the namespaces the rule reaches (* and ? globs);
	// root only if none. Key patterns apply inside each of them.
	Namespaces []string `yaml:"namespaces"`
	// Rate and Burst are the quota of each identity the rule allows, per
	// operation (see quota.go); none if Rate is empty.
	Rate  string `yaml:"rate"`
	Burst int    `yaml:"burst"`

	who   identity.Pattern // Identity, parsed
	limit rate.Limit       // Rate, parsed
}

// Policy is a validated set of rules, their quotas, and the approval
// rules.
type Policy struct {
	rules     []Rule
	quotas    *quotas
	approvals []ApprovalRule
}

// Parse reads and validates a policy document. Errors name the line.
func Parse(doc []byte) (*Policy, error) {
	var top struct {
		Rules []yaml.Node `yaml:"rules"`
		// QuotaShare is the share of every rule's rate this replica
		// enforces: with N replicas behind a balancer, 1/N.
		QuotaShare *float64    `yaml:"quota_share"`
		Approvals  []yaml.Node `yaml:"approvals"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&top); err != nil {
		return nil, errs.New(errs.InvalidArgument, "policy: %v", err)
	}
	share := 1.0
	if top.QuotaShare != nil {
		if share = *top.QuotaShare; share <= 0 || share > 1 {
			return nil, errs.New(errs.InvalidArgument, "policy: quota_share %v: between 0 (excluded) and 1", share)
		}
	}
	p := &Policy{quotas: &quotas{share: share, lims: map[string]*rate.Limiter{}}}
	for _, n := range top.Rules {
		r, err := parseRule(&n)
		if err != nil {
			return nil, errs.New(errs.InvalidArgument, "policy line %d: %v", n.Line, err)
		}
		p.rules = append(p.rules, r)
	}
	for _, n := range top.Approvals {
		r, err := parseApprovalRule(&n)
		if err != nil {
			return nil, errs.New(errs.InvalidArgument, "policy line %d: approval rule: %v", n.Line, err)
		}
		p.approvals = append(p.approvals, r)
	}
	return p, nil
}

// decodeStrict decodes n into v, refusing fields v does not have.
func decodeStrict(n *yaml.Node, v any) error {
	raw, _ := yaml.Marshal(n)
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func parseRule(n *yaml.Node) (Rule, error) {
	var r Rule
	if err := decodeStrict(n, &r); err != nil {
		return r, err
	}
	switch {
	case r.Identity == "":
		return r, fmt.Errorf("identity: missing")
	case len(r.Keys) == 0:
		return r, fmt.Errorf("keys: missing (use [\"*\"] for every key)")
	case len(r.Allow) == 0:
		return r, fmt.Errorf("allow: missing")
	}
	who, err := identity.ParsePattern(r.Identity)
	if err != nil {
		return r, err
	}
	r.who = who
	if r.Rate != "" {
		if r.limit, err = parseRate(r.Rate); err != nil {
			return r, err
		}
	}
	if r.Burst < 0 || r.Burst > 1e6 || r.Burst > 0 && r.Rate == "" {
		return r, fmt.Errorf("burst %d: 1 to 1000000, with a rate", r.Burst)
	}
	if err := checkPatterns(r.Keys); err != nil {
		return r, err
	}
	if err := checkNamespaces(r.Namespaces); err != nil {
		return r, err
	}
	ops := Ops()
	for _, op := range r.Allow {
		if !slices.Contains(ops, op) {
			return r, fmt.Errorf("allow: unknown operation %q (known: %v)", op, ops)
		}
	}
	return r, nil
}

// checkPatterns refuses a key ID pattern path.Match cannot use.
func checkPatterns(keys []string) error {
	for _, k := range keys {
		if _, err := path.Match(k, ""); err != nil {
			return fmt.Errorf("keys: bad pattern %q", k)
		}
	}
	return nil
}

var namespacePattern = regexp.MustCompile(`^[a-z0-9*?][a-z0-9*?-]{0,63}$`)

// checkNamespaces refuses a namespace pattern that could match no
// namespace name or that path.Match cannot use.
func checkNamespaces(patterns []string) error {
	for _, n := range patterns {
		if _, err := path.Match(n, ""); err != nil || !namespacePattern.MatchString(n) {
			return fmt.Errorf("namespaces: bad pattern %q (namespace names: [a-z0-9][a-z0-9-]{0,31}, with * and ? globs)", n)
		}
	}
	return nil
}

// reaches reports whether namespace patterns (root only if none) match
// namespace ns.
func reaches(patterns []string, ns string) bool {
	if ns == namespace.Invalid {
		return false
	}
	if len(patterns) == 0 {
		return ns == namespace.Root
	}
	for _, n := range patterns {
		if ok, _ := path.Match(n, ns); ok {
			return true
		}
	}
	return false
}

// AllowAll is a policy letting the client with the typed identity id (a
// constant, such as the dev client's) do everything in every namespace,
// for --dev.
func AllowAll(id string) *Policy {
	return &Policy{rules: []Rule{{Identity: id, Keys: []string{"*"}, Namespaces: []string{"*"}, Allow: Ops(), who: identity.MustParsePattern(id)}},
		quotas: &quotas{share: 1, lims: map[string]*rate.Limiter{}}}
}

// Allowed reports whether a client with the typed identities ids may do
// op on key keyID (qualified: see package namespace), and which of its
// identities a rule allowed. A keyID with no local part ("" in root,
// "NS/" in NS: a listing) asks whether op is allowed on any key of the
// namespace.
func (p *Policy) Allowed(ids []identity.ID, op Op, keyID string) (identity.ID, bool) {
	who, r := p.allowing(ids, op, keyID)
	return who, r != nil
}

// allowing is the first rule allowing one of ids op on keyID, and which.
func (p *Policy) allowing(ids []identity.ID, op Op, keyID string) (identity.ID, *Rule) {
	for i := range p.rules {
		r := &p.rules[i]
		if !slices.Contains(r.Allow, op) || !r.coversKey(keyID) {
			continue
		}
		for _, id := range ids {
			if r.who.Match(id) {
				return id, r
			}
		}
	}
	return identity.ID{}, nil
}

// Decision is what the policy decided of one request.
type Decision struct {
	Who identity.ID // the identity a rule allowed
	OK  bool
	// Rule is the identity pattern of the allowing rule (a bounded label
	// for metrics); RetryAfter, when not zero, says the rule's quota for
	// Who is spent and when to try again.
	Rule       string
	RetryAfter time.Duration
	// Granted is how many of the requests decided together the quota
	// let through (see DecideN): all of them when RetryAfter is zero.
	Granted int
}

// Decide authorizes a request and spends one of its quota.
func (p *Policy) Decide(ids []identity.ID, op Op, keyID string, now time.Time) Decision {
	return p.DecideN(ids, op, keyID, now, 1)
}

// DecideN authorizes n requests alike (a batch's items on one key) in
// one decision and spends one of the quota for each that it lets
// through: as many as the quota holds, the first Granted of them. OK
// says some were (or, for none, that a rule allows the call: a batch
// whose items are decided by themselves); RetryAfter, when not zero,
// when the others may try.
func (p *Policy) DecideN(ids []identity.ID, op Op, keyID string, now time.Time, n int) Decision {
	who, r := p.allowing(ids, op, keyID)
	if r == nil {
		return Decision{}
	}
	granted, wait := p.quotas.take(r, who, op, now, n)
	return Decision{Who: who, OK: granted > 0 || n == 0, Rule: r.Identity, RetryAfter: wait, Granted: granted}
}

// DecideAny authorizes a call that each handler authorizes for itself
// (the approval service's, op) made in namespace ns ("" for a call about
// every namespace): a rule reaching ns must name one of ids, and the call
// spends one of that rule's quota under op — the first rule allowing op
// there, else the first naming the caller there at all.
func (p *Policy) DecideAny(ids []identity.ID, op Op, ns string, now time.Time) Decision {
	for _, wantOp := range []bool{true, false} {
		for i := range p.rules {
			r := &p.rules[i]
			if wantOp && !slices.Contains(r.Allow, op) || ns != "" && !reaches(r.Namespaces, ns) {
				continue
			}
			for _, id := range ids {
				if r.who.Match(id) {
					granted, wait := p.quotas.take(r, id, op, now, 1)
					return Decision{Who: id, OK: granted > 0, Rule: r.Identity, RetryAfter: wait, Granted: granted}
				}
			}
		}
	}
	return Decision{}
}

// Covering is the first rule allowing one of ids op on every key ID that
// each of patterns can match, and which identity it named. A keyless
// admin call (creating a JWK Set that admits keys by pattern) is decided
// by it: a rule for "tenant-a-*" does not cover a set admitting "*".
func (p *Policy) Covering(ids []identity.ID, op Op, patterns []string) (identity.ID, bool) {
	for i := range p.rules {
		r := &p.rules[i]
		if !slices.Contains(r.Allow, op) || !slices.ContainsFunc(ids, r.who.Match) {
			continue
		}
		if !slices.ContainsFunc(patterns, func(q string) bool { return !r.containsPattern(q) }) {
			for _, id := range ids {
				if r.who.Match(id) {
					return id, true
				}
			}
		}
	}
	return identity.ID{}, false
}

// Bound is the one namespace the rules naming any of ids bind it to
// (root for a rule naming none; a glob binds nothing): the namespace a
// protocol that cannot name one (Ethereum JSON-RPC) calls in. ok is false
// when the rules name several.
func (p *Policy) Bound(ids []identity.ID) (string, bool) {
	found := map[string]bool{}
	for i := range p.rules {
		r := &p.rules[i]
		if !slices.ContainsFunc(ids, r.who.Match) {
			continue
		}
		if len(r.Namespaces) == 0 {
			found[namespace.Root] = true
		}
		for _, n := range r.Namespaces {
			if !strings.ContainsAny(n, "*?") {
				found[n] = true
			}
		}
	}
	switch len(found) {
	case 0:
		return namespace.Root, true
	case 1:
		for n := range found {
			return n, true
		}
	}
	return "", false
}

// Bound is Policy.Bound under the policy in force.
func (a *Authorizer) Bound(ids []identity.ID) (string, bool) { return a.cur.Load().Bound(ids) }

// Covering is Policy.Covering under the policy in force.
func (a *Authorizer) Covering(ids []identity.ID, op Op, patterns []string) (identity.ID, bool) {
	return a.cur.Load().Covering(ids, op, patterns)
}

// containsPattern reports whether every key ID glob q (qualified: its
// namespace is literal) can match is matched by one of r's patterns. It
// is conservative: it says yes, in a namespace the rule reaches, for a
// rule pattern "*", an equal pattern, a literal ID the rule matches, and
// a glob whose literal start extends a rule pattern of the form PREFIX*;
// no otherwise, so a pattern it cannot judge is refused.
func (r *Rule) containsPattern(q string) bool {
	ns, q := namespace.Split(q)
	if !reaches(r.Namespaces, ns) {
		return false
	}
	for _, k := range r.Keys {
		lit := q
		if i := strings.IndexAny(q, "*?[\\"); i >= 0 {
			lit = q[:i]
		}
		switch prefix, trailing := strings.CutSuffix(k, "*"); {
		case k == "*" || k == q:
			return true
		case lit == q: // q is a literal key ID
			if ok, _ := path.Match(k, q); ok {
				return true
			}
		case trailing && !strings.ContainsAny(prefix, "*?[\\") && strings.HasPrefix(lit, prefix):
			return true
		}
	}
	return false
}

// coversKey reports whether r reaches the namespace of keyID (qualified)
// and one of its key patterns matches the local ID; any pattern covers
// the empty local ID of a listing.
func (r *Rule) coversKey(keyID string) bool {
	ns, keyID := namespace.Split(keyID)
	if !reaches(r.Namespaces, ns) {
		return false
	}
	if keyID == "" {
		return true
	}
	for _, k := range r.Keys {
		if ok, _ := path.Match(k, keyID); ok {
			return true
		}
	}
	return false
}

// Authorizer holds the policy in force.
type Authorizer struct {
	path string
	cur  atomic.Pointer[Policy]
}

// Load reads the policy at file.
func Load(file string) (*Authorizer, error) {
	a := &Authorizer{path: file}
	return a, a.Reload()
}

// Fixed returns an Authorizer that always applies p.
func Fixed(p *Policy) *Authorizer {
	a := &Authorizer{}
	a.cur.Store(p)
	return a
}

// Reload re-reads the policy file. On error the policy in force stays.
func (a *Authorizer) Reload() error {
	if a.path == "" {
		return nil
	}
	doc, err := os.ReadFile(a.path)
	if err != nil {
		return errs.New(errs.InvalidArgument, "policy: %w", err)
	}
	p, err := Parse(doc)
	if err != nil {
		return err
	}
	a.cur.Store(p)
	return nil
}

// Decide applies the policy in force, quotas included.
func (a *Authorizer) Decide(ids []identity.ID, op Op, keyID string, now time.Time) Decision {
	return a.cur.Load().Decide(ids, op, keyID, now)
}

// DecideN applies the policy in force, quotas included.
func (a *Authorizer) DecideN(ids []identity.ID, op Op, keyID string, now time.Time, n int) Decision {
	return a.cur.Load().DecideN(ids, op, keyID, now, n)
}

// DecideAny applies the policy in force.
func (a *Authorizer) DecideAny(ids []identity.ID, op Op, ns string, now time.Time) Decision {
	return a.cur.Load().DecideAny(ids, op, ns, now)
}

// Allowed applies the policy in force.
func (a *Authorizer) Allowed(ids []identity.ID, op Op, keyID string) (identity.ID, bool) {
	return a.cur.Load().Allowed(ids, op, keyID)
}

// Names reports whether the policy names identity id literally: as a
// rule's identity or an approval rule's approver, not through a pattern
// (the identities the console may enroll people as).
func (p *Policy) Names(id string) bool {
	for i := range p.rules {
		if p.rules[i].Identity == id {
			return true
		}
	}
	for i := range p.approvals {
		if slices.Contains(p.approvals[i].Approvers, id) {
			return true
		}
	}
	return false
}

// Names is Policy.Names under the policy in force.
func (a *Authorizer) Names(id string) bool { return a.cur.Load().Names(id) }
