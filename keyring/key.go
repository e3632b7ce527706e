package keyring

import (
	"crypto"
	"regexp"
	"slices"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// Purpose says what a key may sign. A key signs only for its purpose: a
// JWT key must never sign an arbitrary digest, or a raw-sign client could
// forge tokens.
type Purpose string

// The purposes.
const (
	PurposeJWT Purpose = "jwt"
	PurposeEth Purpose = "eth"
	PurposeRaw Purpose = "raw"
	// PurposeAudit is the audit key's: it signs audit checkpoints and
	// nothing a client asks for. Only Sigil makes it (EnsureAuditKey).
	PurposeAudit Purpose = "audit"
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
	Purpose     Purpose          `json:"purpose"`
	Algorithm   signer.Algorithm `json:"algorithm"`
	RSABits     int              `json:"rsa_bits,omitempty"`
	Backend     string           `json:"backend"`
	Generations []Generation     `json:"generations"`
	CreatedAt   time.Time        `json:"created_at"`
	UpdatedAt   time.Time        `json:"updated_at"`

	// JWT is the rotation policy of a jwt-purpose key.
	JWT *JWTPolicy `json:"jwt,omitempty"`
	// Eth is the spending policy of an eth-purpose key, and Address its
	// EIP-55 address, derived once from the public key.
	Eth     *EthPolicy `json:"eth,omitempty"`
	Address string     `json:"address,omitempty"`
	// RequestID is the client's name for the request that created the key.
	RequestID string `json:"request_id,omitempty"`
	// Disabled keys refuse to sign until enabled again; their generations
	// and schedule go on.
	Disabled bool `json:"disabled,omitempty"`
	// ActivateNotBefore holds back the next activation after a policy
	// change shortened the JWKS max-age: caches taken under the old one
	// must expire before a generation they lack may sign.
	ActivateNotBefore time.Time `json:"activate_not_before,omitzero"`

	// Revision is the store revision this copy was read at; writes succeed
	// only if the stored revision still equals it. Zero means "new".
	Revision int64 `json:"-"`
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

// Find returns the generation numbered n, or whose kid is kid; with
// neither, the active one. Generations being created are never found.
func (k *Key) Find(n int, kid string) (*Generation, error) {
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
	n := 0
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
	if k.JWT != nil {
		p := *k.JWT
		c.JWT = &p
	}
	if k.Eth != nil {
		p := *k.Eth
		c.Eth = &p
	}
	return &c
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidateID checks a key ID: [a-z0-9][a-z0-9._-]{0,63}.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return errs.New(errs.InvalidArgument, "key ID must match [a-z0-9][a-z0-9._-]{0,63}")
	}
	return nil
}

// ParsePurpose returns the Purpose named s.
func ParsePurpose(s string) (Purpose, error) {
	switch p := Purpose(s); p {
	case PurposeJWT, PurposeEth, PurposeRaw:
		return p, nil
	}
	return "", errs.New(errs.InvalidArgument, "unknown purpose %q (want jwt, eth or raw)", s)
}

// checkPurpose reports whether alg may serve purpose p: Ethereum keys are
// secp256k1, and a secp256k1 key for JWTs is ES256K.
func checkPurpose(p Purpose, alg signer.Algorithm) error {
	if p == PurposeEth && alg != signer.ES256K {
		return errs.New(errs.InvalidArgument, "purpose eth needs algorithm ES256K, not %s", alg)
	}
	return nil
}
