package keyring

import (
	"context"
	"crypto"
	"encoding/json"
	"sort"
	"sync"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// Purpose is what the keyring needs to know of a signing purpose (what a
// key may sign: JWTs, Ethereum transactions, raw digests). Each purpose
// owns its policy: the keyring stores it as JSON and hands it back
// decoded, and reads it only through Scheduled. A key signs only for its
// purpose, so a key made for JWTs can never sign an arbitrary digest.
//
// Purposes register once, at init (Register); package purpose adds what
// the API edge needs of them.
type Purpose interface {
	// Name is the purpose's name in key records and requests.
	Name() string
	// CheckAlgorithm refuses an algorithm the purpose cannot sign with.
	CheckAlgorithm(signer.Algorithm) error
	// DecodePolicy decodes a policy as a key record stores it; nil raw
	// means the record holds none.
	DecodePolicy(raw json.RawMessage) (any, error)
	// NewPolicy returns the policy a new key gets when requested is asked
	// for (nil: none was): defaults filled in, checked.
	NewPolicy(requested any) (any, error)
	// UpdatePolicy returns the policy that replaces old when requested is
	// asked for, checked.
	UpdatePolicy(old, requested any) (any, error)
	// Rotation says how the purpose's keys rotate.
	Rotation() Rotation
	// Attributes derives what a key is known by besides its ID (an
	// Ethereum address) from its newest public key; nil for nothing.
	Attributes(pub crypto.PublicKey) (map[string]string, error)
}

// PolicyChecker is the ability of a purpose to check a policy against
// what the store keeps beside the keys (a JWK Set it names must exist),
// before a key is created with it or given it.
type PolicyChecker interface {
	CheckPolicy(ctx context.Context, a Anchors, keyID string, alg signer.Algorithm, policy any) error
}

// Rotation says how a purpose's keys rotate.
type Rotation int

// The rotation models.
const (
	// RotateNever: the public key is the key's identity (an Ethereum
	// address), so it never gets a second generation.
	RotateNever Rotation = iota
	// RotateOnDemand: a new generation signs at once when asked for, and
	// the one before retires (it still verifies until destroyed).
	RotateOnDemand
	// RotateScheduled: generations rotate on the Schedule the key's
	// policy gives (it must implement Scheduled), published ahead of
	// signing; the key always has an active generation (one lost is
	// restored, and revoking it activates a replacement).
	RotateScheduled
)

// Scheduled is a policy that carries a rotation Schedule.
type Scheduled interface{ RotationSchedule() Schedule }

// NoPolicy is embedded by purposes whose keys carry no policy.
type NoPolicy struct{}

// DecodePolicy accepts only an empty policy.
func (NoPolicy) DecodePolicy(raw json.RawMessage) (any, error) {
	if len(raw) > 0 && string(raw) != "null" {
		return nil, errs.New(errs.Internal, "a policy is stored for a purpose that has none")
	}
	return nil, nil
}

// NewPolicy refuses a requested policy.
func (NoPolicy) NewPolicy(requested any) (any, error) {
	if requested != nil {
		return nil, errs.New(errs.InvalidArgument, "keys of this purpose take no policy")
	}
	return nil, nil
}

// UpdatePolicy refuses every change.
func (NoPolicy) UpdatePolicy(_, _ any) (any, error) {
	return nil, errs.New(errs.FailedPrecondition, "keys of this purpose have no policy")
}

// Attributes derives nothing.
func (NoPolicy) Attributes(crypto.PublicKey) (map[string]string, error) { return nil, nil }

var purposes = struct {
	sync.RWMutex
	m map[string]Purpose
}{m: map[string]Purpose{}}

// Register makes purpose p known to every keyring. It panics if the name
// is taken, as that is a programming error found at init.
func Register(p Purpose) {
	purposes.Lock()
	defer purposes.Unlock()
	if _, dup := purposes.m[p.Name()]; dup {
		panic("keyring: purpose registered twice: " + p.Name())
	}
	purposes.m[p.Name()] = p
}

// LookupPurpose returns the purpose called name. Sigil's own audit
// purpose is not among them: no client may ask for it.
func LookupPurpose(name string) (Purpose, error) {
	purposes.RLock()
	p, ok := purposes.m[name]
	purposes.RUnlock()
	if !ok || name == PurposeAudit {
		return nil, errs.New(errs.InvalidArgument, "unknown purpose %q (known: %v)", name, PurposeNames())
	}
	return p, nil
}

// PurposeNames lists the purposes clients may ask for, sorted.
func PurposeNames() []string {
	purposes.RLock()
	defer purposes.RUnlock()
	var out []string
	for name := range purposes.m {
		if name != PurposeAudit {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// purposeOf returns the purpose of key k, with Sigil's own.
func purposeOf(k *Key) (Purpose, bool) {
	purposes.RLock()
	defer purposes.RUnlock()
	p, ok := purposes.m[k.Purpose]
	return p, ok
}

// PurposeAudit is the audit key's: it signs audit checkpoints and nothing
// a client asks for. Only Sigil makes it (EnsureAuditKey).
const PurposeAudit = "audit"

// auditPurpose is PurposeAudit: ES256, no policy, never rotated.
type auditPurpose struct{ NoPolicy }

func (auditPurpose) Name() string       { return PurposeAudit }
func (auditPurpose) Rotation() Rotation { return RotateNever }
func (auditPurpose) CheckAlgorithm(alg signer.Algorithm) error {
	if alg != signer.ES256 {
		return errs.New(errs.InvalidArgument, "the audit key is ES256")
	}
	return nil
}

func init() { Register(auditPurpose{}) }

// checkPolicy runs p's PolicyChecker, if it has one, against the store.
func (r *Keyring) checkPolicy(ctx context.Context, p Purpose, id string, alg signer.Algorithm, policy any) error {
	c, ok := p.(PolicyChecker)
	if !ok {
		return nil
	}
	a, _ := r.store.(Anchors)
	return c.CheckPolicy(ctx, a, id, alg, policy)
}
