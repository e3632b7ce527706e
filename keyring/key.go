package keyring

import (
	"crypto"
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/signer"
)

// AuditKeyID is the ID of the key that signs audit checkpoints. IDs that
// start with "sigil." are reserved for Sigil's own keys.
const AuditKeyID = "sigil.audit"

// State is a generation's place in its lifecycle (DESIGN.md, Rotation).
type State string

// The generation states. Creating marks a generation whose key pair may or
// may not exist yet in the backend; it never signs and is never shown.
const (
	StateCreating  State = "creating"
	StatePending   State = "pending"
	StateActive    State = "active"
	StateRetiring  State = "retiring"
	StateRetired   State = "retired"
	StateDestroyed State = "destroyed"
	StateRevoked   State = "revoked"
)

// States lists every state a client may see.
var States = []State{StatePending, StateActive, StateRetiring, StateRetired, StateRevoked, StateDestroyed}

// Key is a logical key and its generations.
type Key struct {
	ID          string           `json:"id"`
	Purpose     string           `json:"purpose"` // the name of its Purpose
	Algorithm   signer.Algorithm `json:"algorithm"`
	RSABits     int              `json:"rsa_bits,omitempty"`
	Backend     string           `json:"backend"`
	Generations []Generation     `json:"generations"`
	// LastGeneration is the highest generation number ever given: numbers
	// (and the backend object names made from them) are never reused, even
	// after a rolled-back creation's generation left the record, so a
	// rollback decided on an older view can never hit a newer creation.
	LastGeneration int       `json:"last_generation,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`

	// PolicyJSON is the key's policy as its purpose encodes it (see
	// Purpose); Policy returns it decoded. None for purposes without one.
	PolicyJSON json.RawMessage `json:"policy,omitempty"`
	// Attributes are what the purpose derived from the public key (an
	// Ethereum key's "address").
	Attributes map[string]string `json:"attributes,omitempty"`
	// Origin is how the key's pair came to be: generated in its backend
	// by Sigil (empty), or adopted, made by another tool in the backend
	// (OriginAdopted). An adopted key was never "generated in the HSM by
	// Sigil": whoever made it may have held it in clear.
	Origin string `json:"origin,omitempty"`
	// RequestID is the client's name for the request that created the key.
	RequestID string `json:"request_id,omitempty"`
	// Disabled keys refuse to sign until enabled again; their generations
	// and schedule go on.
	Disabled bool `json:"disabled,omitempty"`
	// DeleteAt is when a scheduled deletion destroys every generation's
	// objects (zero: none scheduled); Deleted says it has. A key pending
	// deletion refuses to sign; a deleted one keeps its record, so its ID
	// is never reused.
	DeleteAt time.Time `json:"delete_at,omitzero"`
	Deleted  bool      `json:"deleted,omitempty"`
	// DeletionStarted: the scheduler began destroying the key's objects;
	// the deletion can no longer be cancelled.
	DeletionStarted bool `json:"deletion_started,omitempty"`
	// Labels, Owner and Description are the key's inventory.
	Labels      map[string]string `json:"labels,omitempty"`
	Owner       string            `json:"owner,omitempty"`
	Description string            `json:"description,omitempty"`
	// ActivateNotBefore holds back the next activation after a policy
	// change shortened the JWKS max-age: caches taken under the old one
	// must expire before a generation they lack may sign.
	ActivateNotBefore time.Time `json:"activate_not_before,omitzero"`

	// Revision is the store revision this copy was read at; writes succeed
	// only if the stored revision still equals it. Zero means "new".
	Revision int64 `json:"-"`

	policy    any   // PolicyJSON, decoded by the purpose; treated as immutable
	policyErr error // why PolicyJSON did not decode: the key then never signs
}

// CheckPurpose refuses, with FailedPrecondition, a key whose purpose is
// not the one named p, or whose stored policy is unusable.
func (k *Key) CheckPurpose(p string) error {
	switch {
	case k.Purpose != p:
		return errs.New(errs.FailedPrecondition, "key %q has purpose %s, not %s", k.ID, k.Purpose, p)
	case k.policyErr != nil:
		return errs.New(errs.FailedPrecondition, "key %q has a stored policy that does not load (%v); set a valid one", k.ID, k.policyErr)
	}
	return nil
}

// Policy returns the key's policy as its purpose decoded it (nil if it has
// none). Callers must not change it.
func (k *Key) Policy() any { return k.policy }

// schedule returns the key's rotation schedule, if its policy has one.
func (k *Key) schedule() (Schedule, bool) {
	s, ok := k.policy.(Scheduled)
	if !ok {
		return Schedule{}, false
	}
	return s.RotationSchedule(), true
}

// setPolicy makes p the key's policy, encoded for the store.
func (k *Key) setPolicy(p any) error {
	k.policy, k.policyErr, k.PolicyJSON = p, nil, nil
	if p == nil {
		return nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return errs.New(errs.Internal, "encoding the policy of key %q: %w", k.ID, err)
	}
	k.PolicyJSON = b
	return nil
}

// UnmarshalJSON reads a key record, including those written before
// purposes owned their policies: their "jwt" or "eth" policy becomes
// the policy, and "address" an attribute. The next write stores the
// current form.
func (k *Key) UnmarshalJSON(b []byte) error {
	type record Key // without this method
	var r struct {
		record
		JWT     json.RawMessage `json:"jwt"`
		Eth     json.RawMessage `json:"eth"`
		Address string          `json:"address"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	*k = Key(r.record)
	if isNull(k.PolicyJSON) {
		k.PolicyJSON = nil
	}
	for _, legacy := range []json.RawMessage{r.JWT, r.Eth} {
		if k.PolicyJSON == nil && !isNull(legacy) {
			k.PolicyJSON = legacy
		}
	}
	if r.Address != "" && k.Attributes["address"] == "" {
		if k.Attributes == nil {
			k.Attributes = map[string]string{}
		}
		k.Attributes["address"] = r.Address
	}
	return nil
}

// isNull reports whether raw holds no value.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// Generation is one key pair of a logical key.
type Generation struct {
	Number    int       `json:"number"`
	State     State     `json:"state"`
	Name      string    `json:"name"` // the name the backend knows the key pair by
	Ref       string    `json:"ref"`  // the backend's reference to it
	PublicKey []byte    `json:"public_key,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Abandoned marks a creating generation whose creation failed and whose
	// rollback could not finish (its backend was down): no creation is in
	// flight for it, so it is rolled back as soon as the backend answers,
	// not after the grace an unfinished creation gets.
	Abandoned bool `json:"abandoned,omitempty"`
	// Origin is OriginImported for a pair imported as this generation,
	// empty for one generated (a key's first: see Key.Origin).
	Origin string `json:"origin,omitempty"`

	// Lifecycle times; zero until they apply.
	PublishedAt time.Time `json:"published_at,omitzero"` // entered pending (or active, for generation 1)
	ActivateAt  time.Time `json:"activate_at,omitzero"`  // when a pending generation is due to sign
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	RetiringAt  time.Time `json:"retiring_at,omitzero"`  // stopped signing
	UnpublishAt time.Time `json:"unpublish_at,omitzero"` // RetiringAt + T + S
	RetiredAt   time.Time `json:"retired_at,omitzero"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
	DestroyAt   time.Time `json:"destroy_at,omitzero"` // objects deleted from the backend then

	public crypto.PublicKey // parsed PublicKey, set when loaded
	kid    string           // RFC 7638 thumbprint of public
}

// Public returns the parsed public key.
func (g *Generation) Public() crypto.PublicKey { return g.public }

// KID returns the generation's JWK key ID, the RFC 7638 thumbprint of its
// public key.
func (g *Generation) KID() string { return g.kid }

// Active returns the generation that signs, if any.
func (k *Key) Active() (*Generation, bool) {
	for i := range k.Generations {
		if k.Generations[i].State == StateActive {
			return &k.Generations[i], true
		}
	}
	return nil, false
}

// Published reports whether relying parties should have g in their JWKS.
func (g *Generation) Published() bool {
	return g.State == StatePending || g.State == StateActive || g.State == StateRetiring
}

// Trusted reports whether signatures by g still verify: it is pending,
// active, retiring or retired (not revoked, destroyed or being created).
func (g *Generation) Trusted() bool {
	return g.Published() || g.State == StateRetired
}

// Find returns the generation numbered n, or whose kid is kid (a request
// names one or the other, not both); with neither, the active one.
// Generations being created are never found.
func (k *Key) Find(n int, kid string) (*Generation, error) {
	switch {
	case n < 0:
		return nil, errs.New(errs.InvalidArgument, "generation: must be 1 or more")
	case n != 0 && kid != "":
		return nil, errs.New(errs.InvalidArgument, "name a generation by number or by kid, not both")
	}
	if n == 0 && kid == "" {
		if g, ok := k.Active(); ok {
			return g, nil
		}
		return nil, errs.New(errs.FailedPrecondition, "key %q has no active generation", k.ID)
	}
	for i := range k.Generations {
		g := &k.Generations[i]
		if g.State != StateCreating && (g.Number == n || kid != "" && g.kid == kid) {
			return g, nil
		}
	}
	return nil, errs.New(errs.NotFound, "key %q has no such generation", k.ID)
}

// generation returns generation n.
func (k *Key) generation(n int) (*Generation, bool) {
	for i := range k.Generations {
		if k.Generations[i].Number == n {
			return &k.Generations[i], true
		}
	}
	return nil, false
}

// inState returns the generations in state s, oldest first.
func (k *Key) inState(s State) []*Generation {
	var out []*Generation
	for i := range k.Generations {
		if k.Generations[i].State == s {
			out = append(out, &k.Generations[i])
		}
	}
	return out
}

// KeepDestroyed is how many destroyed generations a key's record keeps:
// enough to read a key's recent history with `sigil keys get`, few enough
// that a key rotating daily does not grow its record (an etcd value)
// without bound. The audit log keeps the whole history.
const KeepDestroyed = 8

// pruneDestroyed drops all but the newest KeepDestroyed destroyed
// generations. The highest-numbered generation always stays, so numbers
// (and the backend object names made from them) are never reused.
func (k *Key) pruneDestroyed() {
	destroyed := k.inState(StateDestroyed)
	if len(destroyed) <= KeepDestroyed {
		return
	}
	last, top := destroyed[len(destroyed)-KeepDestroyed-1].Number, k.nextNumber()-1
	k.Generations = slices.DeleteFunc(k.Generations, func(g Generation) bool {
		return g.State == StateDestroyed && g.Number <= last && g.Number != top
	})
}

// nextNumber is the number the next generation gets.
func (k *Key) nextNumber() int {
	n := k.LastGeneration
	for _, g := range k.Generations {
		n = max(n, g.Number)
	}
	return n + 1
}

// visible reports whether k exists for clients: its first key pair is made.
func (k *Key) visible() bool {
	return slices.ContainsFunc(k.Generations, func(g Generation) bool { return g.State != StateCreating })
}

// clone returns a deep copy, so callers can change it without touching the
// keyring's memory.
func (k *Key) clone() *Key {
	c := *k
	c.Generations = slices.Clone(k.Generations)
	c.PolicyJSON = slices.Clone(k.PolicyJSON)
	c.Attributes = maps.Clone(k.Attributes)
	c.Labels = maps.Clone(k.Labels)
	return &c
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidateName checks the name a key is kept under: its ID in the root
// namespace, NS/ID in namespace NS (see package namespace).
func ValidateName(name string) error {
	ns, id := namespace.Split(name)
	if ns != namespace.Root || strings.Contains(name, "/") {
		if ns == namespace.Root || namespace.Validate(ns) != nil {
			return errs.New(errs.InvalidArgument, "key name %q: want ID or NS/ID", name)
		}
	}
	return ValidateID(id)
}

// ValidateID checks a key ID: [a-z0-9][a-z0-9._-]{0,63}.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return errs.New(errs.InvalidArgument, "key ID must match [a-z0-9][a-z0-9._-]{0,63}")
	}
	return nil
}
