package authz

import (
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sigil-hsm/sigil/internal/identity"
)

// Approval rules (dual control) sit beside the access rules: an
// operation, the keys it covers, and a condition on the request; a
// request they match is not run but held until a quorum of other
// identities approves it (see package server and internal/approval).
// They apply after the access rules allowed the request: they can only
// add a hurdle, never open a door.

// ApprovalsApprove lets an identity list, inspect, approve and deny the
// requests held on the keys its rule names, if an approval rule names it
// among its approvers too.
const ApprovalsApprove Op = "approvals.approve"

// The actions of keys.admin an approval rule can name (`actions:`): what
// each KeyService method does; UpdateKeyPolicy is update-policy, and also
// loosen-policy when the new policy allows something the old did not.
var AdminActions = []string{"create", "update-policy", "loosen-policy", "rotate", "rotate-now", "revoke",
	"disable", "enable", "schedule-deletion", "cancel-deletion", "update-metadata"}

// NamespaceActions are the actions of ns.admin an approval rule can name:
// what each NamespaceService method changing a namespace does.
var NamespaceActions = []string{"create", "delete", "freeze", "unfreeze"}

// Conditions an approval rule's `when:` can set, each offered by the
// purposes whose requests carry what it tests (RegisterConditions).
const (
	CondValueGTE    = "value_gte"   // the value moved is at least this many wei
	CondToNotIn     = "to_not_in"   // the recipient is none of these addresses (or there is none)
	CondReplacement = "replacement" // the request replaces one already signed (an Ethereum nonce's)
)

var conditions = struct {
	sync.RWMutex
	m map[Op][]string
}{m: map[Op][]string{}}

// RegisterConditions says which conditions op's requests can be tested
// on; a rule setting another for op is refused at load.
func RegisterConditions(op Op, names ...string) {
	conditions.Lock()
	defer conditions.Unlock()
	conditions.m[op] = append(conditions.m[op], names...)
}

func conditionsOf(op Op) []string {
	conditions.RLock()
	defer conditions.RUnlock()
	return conditions.m[op]
}

// Facts are what a request held against approval rules is tested on,
// as its purpose (or for keys.admin, the server) reads them.
type Facts struct {
	Actions     []string // keys.admin: what the request does
	Value       *big.Int // the amount moved; nil when nothing is
	To          string   // the recipient's address, 0x and 40 lower-case hex; "" for none
	Replacement bool     // it replaces a request already signed
}

// ApprovalRule says who must approve which requests.
type ApprovalRule struct {
	Operation Op       `yaml:"operation"`
	Keys      []string `yaml:"keys"` // key ID patterns; every key if none
	// Namespaces the rule applies in (* and ? globs); root only if none.
	Namespaces []string `yaml:"namespaces"`
	Actions    []string `yaml:"actions"`
	When       struct {
		ValueGTE    string   `yaml:"value_gte"`
		ToNotIn     []string `yaml:"to_not_in"`
		Replacement bool     `yaml:"replacement"`
	} `yaml:"when"`
	Approvers []string `yaml:"approvers"`
	Quorum    int      `yaml:"quorum"`
	// Require: "passkey" makes every approval and denial carry an
	// assertion of the approver's enrolled passkey over the decision (the
	// console's): a stolen client certificate alone decides nothing.
	Require string `yaml:"require"`
	Expires string `yaml:"expires"` // a Go duration; 1h if unset

	approvers []identity.Pattern
	valueGTE  *big.Int
	expires   time.Duration
}

// Limits of an approval rule.
const (
	MaxQuorum      = 16
	DefaultExpires = time.Hour
	MaxExpires     = 7 * 24 * time.Hour
)

var addressForm = regexp.MustCompile(`^0x[0-9a-fA-F]{40}$`)

func parseApprovalRule(n *yaml.Node) (ApprovalRule, error) {
	var r ApprovalRule
	if err := decodeStrict(n, &r); err != nil {
		return r, err
	}
	switch {
	case r.Operation == ApprovalsApprove || r.Operation == KeysRead:
		return r, fmt.Errorf("operation: %s cannot be held (approving and reading are what approvers do)", r.Operation)
	case !slices.Contains(Ops(), r.Operation):
		return r, fmt.Errorf("operation: unknown %q (known: %v)", r.Operation, Ops())
	}
	if r.Quorum < 1 || r.Quorum > MaxQuorum {
		return r, fmt.Errorf("quorum %d: 1 to %d", r.Quorum, MaxQuorum)
	}
	if len(r.Approvers) == 0 {
		return r, fmt.Errorf("approvers: missing")
	}
	if r.Require != "" && r.Require != "passkey" {
		return r, fmt.Errorf("require %q: passkey, or nothing", r.Require)
	}
	for _, a := range r.Approvers {
		p, err := identity.ParsePattern(a)
		if err != nil {
			return r, fmt.Errorf("approvers: %w", err)
		}
		r.approvers = append(r.approvers, p)
	}
	if err := checkPatterns(r.Keys); err != nil {
		return r, err
	}
	if err := checkNamespaces(r.Namespaces); err != nil {
		return r, err
	}
	r.expires = DefaultExpires
	if r.Expires != "" {
		d, err := time.ParseDuration(r.Expires)
		if err != nil || d < time.Second || d > MaxExpires {
			return r, fmt.Errorf("expires %q: a duration from 1s to %v", r.Expires, MaxExpires)
		}
		r.expires = d
	}
	if err := r.checkActions(); err != nil {
		return r, err
	}
	return r, r.checkWhen()
}

func (r *ApprovalRule) checkActions() error {
	known := map[Op][]string{KeysAdmin: AdminActions, NamespacesAdmin: NamespaceActions}[r.Operation]
	if len(r.Actions) > 0 && known == nil {
		return fmt.Errorf("actions: only for %s and %s", KeysAdmin, NamespacesAdmin)
	}
	for _, a := range r.Actions {
		if !slices.Contains(known, a) {
			return fmt.Errorf("actions: unknown %q (known: %v)", a, known)
		}
	}
	return nil
}

// DefaultApproval is the approval rule a request no configured rule holds must
// still be approved under (lifting a namespace's freeze): one approval,
// by another identity that rules in force allow op on target, within
// DefaultExpires.
func (p *Policy) DefaultApproval(op Op, target string) *ApprovalRule {
	r := &ApprovalRule{Operation: op, Quorum: 1, expires: DefaultExpires}
	for i := range p.rules {
		rule := &p.rules[i]
		if slices.Contains(rule.Allow, op) && rule.coversKey(target) && !slices.Contains(r.Approvers, rule.Identity) {
			r.Approvers = append(r.Approvers, rule.Identity)
			r.approvers = append(r.approvers, rule.who)
		}
	}
	if len(r.approvers) == 0 {
		return nil
	}
	return r
}

// DefaultApproval applies the policy in force.
func (a *Authorizer) DefaultApproval(op Op, target string) *ApprovalRule {
	return a.cur.Load().DefaultApproval(op, target)
}

func (r *ApprovalRule) checkWhen() error {
	offered := conditionsOf(r.Operation)
	set := map[string]bool{CondValueGTE: r.When.ValueGTE != "", CondToNotIn: len(r.When.ToNotIn) > 0, CondReplacement: r.When.Replacement}
	for name, on := range set {
		if on && !slices.Contains(offered, name) {
			return fmt.Errorf("when: %s cannot be tested on %s requests", name, r.Operation)
		}
	}
	if r.When.ValueGTE != "" {
		v, ok := new(big.Int).SetString(r.When.ValueGTE, 10)
		if !ok || v.Sign() < 0 || v.BitLen() > 256 {
			return fmt.Errorf("when: value_gte %q: a decimal amount of wei", r.When.ValueGTE)
		}
		r.valueGTE = v
	}
	for i, a := range r.When.ToNotIn {
		if !addressForm.MatchString(a) {
			return fmt.Errorf("when: to_not_in: %q is not an address (0x and 40 hex digits)", a)
		}
		r.When.ToNotIn[i] = strings.ToLower(a)
	}
	return nil
}

// QuorumSize is how many approvals a request the rule holds needs.
func (r *ApprovalRule) QuorumSize() int { return r.Quorum }

// Lifetime is how long a held request waits for its quorum.
func (r *ApprovalRule) Lifetime() time.Duration { return r.expires }

// ApproverPatterns are the identities that may approve, as written.
func (r *ApprovalRule) ApproverPatterns() []string { return slices.Clone(r.Approvers) }

// IsApprover reports whether id is one of the rule's approvers.
func (r *ApprovalRule) IsApprover(id identity.ID) bool {
	return slices.ContainsFunc(r.approvers, func(p identity.Pattern) bool { return p.Match(id) })
}

// covers reports whether the rule is about op on keyID (qualified),
// whatever the request.
func (r *ApprovalRule) covers(op Op, keyID string) bool {
	keys := r.Keys
	if len(keys) == 0 {
		keys = []string{"*"}
	}
	return r.Operation == op && (&Rule{Keys: keys, Namespaces: r.Namespaces}).coversKey(keyID)
}

// holds reports whether a request with facts f needs the rule's
// approval: each condition set holds (actions: one is the request's).
func (r *ApprovalRule) holds(f Facts) bool {
	if len(r.Actions) > 0 && !slices.ContainsFunc(f.Actions, func(a string) bool { return slices.Contains(r.Actions, a) }) {
		return false
	}
	if r.valueGTE != nil && (f.Value == nil || f.Value.Cmp(r.valueGTE) < 0) {
		return false
	}
	if len(r.When.ToNotIn) > 0 && slices.Contains(r.When.ToNotIn, f.To) {
		return false
	}
	return !r.When.Replacement || f.Replacement
}

// Tests reports whether an approval rule about op on keyID sets the
// condition cond (authz.Cond*): the facts only it needs are read then.
func (p *Policy) Tests(op Op, keyID, cond string) bool {
	return slices.ContainsFunc(p.approvals, func(r ApprovalRule) bool {
		if !r.covers(op, keyID) {
			return false
		}
		switch cond {
		case CondValueGTE:
			return r.valueGTE != nil
		case CondToNotIn:
			return len(r.When.ToNotIn) > 0
		case CondReplacement:
			return r.When.Replacement
		}
		return false
	})
}

// MayHold reports whether an approval rule is about op on keyID at all,
// so that only those requests are read for their facts.
func (p *Policy) MayHold(op Op, keyID string) bool {
	return slices.ContainsFunc(p.approvals, func(r ApprovalRule) bool { return r.covers(op, keyID) })
}

// Approval is the rule a request of op on keyID with facts f must be
// approved under: of the rules that hold, the one asking the largest
// quorum (the first of those). Nil if none holds.
func (p *Policy) Approval(op Op, keyID string, f Facts) *ApprovalRule {
	var best *ApprovalRule
	for i := range p.approvals {
		r := &p.approvals[i]
		if r.covers(op, keyID) && r.holds(f) && (best == nil || r.Quorum > best.Quorum) {
			best = r
		}
	}
	return best
}

// Tests applies the policy in force.
func (a *Authorizer) Tests(op Op, keyID, cond string) bool {
	return a.cur.Load().Tests(op, keyID, cond)
}

// MayHold applies the policy in force.
func (a *Authorizer) MayHold(op Op, keyID string) bool { return a.cur.Load().MayHold(op, keyID) }

// Approval applies the policy in force.
func (a *Authorizer) Approval(op Op, keyID string, f Facts) *ApprovalRule {
	return a.cur.Load().Approval(op, keyID, f)
}

// RequiresPasskey reports whether the rule's decisions must carry a
// passkey assertion.
func (r *ApprovalRule) RequiresPasskey() bool { return r.Require == "passkey" }
