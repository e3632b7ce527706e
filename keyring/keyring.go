package keyring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/jwks"
	"github.com/sigil-hsm/sigil/signer"
)

// cleanupTimeout bounds the cleanup of a half-created key. Cleanup runs on
// a context detached from the caller's cancellation: a client that gives up
// must not leave a key pair behind in the HSM.
const cleanupTimeout = 30 * time.Second

// staleAfter is how old a "creating" record must be before another
// attempt treats it as abandoned rather than in progress.
const staleAfter = 2 * time.Minute

// Keyring is the in-memory, store-backed view of every key.
type Keyring struct {
	store          Store
	backends       map[string]signer.Backend
	defaultBackend string
	now            func() time.Time
	log            *slog.Logger

	mu   sync.RWMutex
	keys map[string]*Key // visible keys with parsed public keys
}

// Options configure a Keyring.
type Options struct {
	Store          Store
	Backends       map[string]signer.Backend
	DefaultBackend string
	Now            func() time.Time // time.Now if nil; tests inject a fake clock
	Logger         *slog.Logger
}

// New loads every key from the store and cleans up abandoned creations.
func New(ctx context.Context, o Options) (*Keyring, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if _, ok := o.Backends[o.DefaultBackend]; !ok && o.DefaultBackend != "" {
		return nil, errs.New(errs.InvalidArgument, "default_backend %q is not a configured backend", o.DefaultBackend)
	}
	r := &Keyring{store: o.Store, backends: o.Backends, defaultBackend: o.DefaultBackend, now: o.Now, log: o.Logger, keys: map[string]*Key{}}
	stored, err := r.store.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range stored {
		if !k.visible() {
			if r.stale(k) {
				r.abandon(ctx, k)
			}
			continue
		}
		if err := r.remember(k); err != nil {
			return nil, fmt.Errorf("loading key %q: %w", k.ID, err)
		}
	}
	return r, nil
}

// remember parses k's public keys and makes it the in-memory copy.
func (r *Keyring) remember(k *Key) error {
	for i := range k.Generations {
		g := &k.Generations[i]
		if len(g.PublicKey) == 0 {
			continue
		}
		pub, err := signer.ParsePublicKey(g.PublicKey)
		if err != nil {
			return errs.New(errs.Internal, "generation %d public key: %w", g.Number, err)
		}
		kid, err := jwks.Thumbprint(pub)
		if err != nil {
			return errs.New(errs.Internal, "generation %d: %w", g.Number, err)
		}
		g.public, g.kid = pub, kid
	}
	r.mu.Lock()
	r.keys[k.ID] = k
	r.mu.Unlock()
	return nil
}

// Get returns a copy of key id.
func (r *Keyring) Get(_ context.Context, id string) (*Key, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	r.mu.RLock()
	k, ok := r.keys[id]
	r.mu.RUnlock()
	if !ok {
		return nil, errs.New(errs.NotFound, "key %q not found", id)
	}
	return k.clone(), nil
}

// List returns copies of every key, in ID order.
func (r *Keyring) List(context.Context) []*Key {
	r.mu.RLock()
	out := make([]*Key, 0, len(r.keys))
	for _, k := range r.keys {
		out = append(out, k.clone())
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Key) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Signing is what the signing path needs: the key, the generation that
// signs now, and the backend holding it.
type Signing struct {
	Key        *Key
	Generation *Generation
	Backend    signer.Backend
}

// ForSigning resolves key id for a signature of purpose p.
func (r *Keyring) ForSigning(ctx context.Context, id string, p Purpose) (Signing, error) {
	k, err := r.Get(ctx, id)
	if err != nil {
		return Signing{}, err
	}
	if k.Purpose != p {
		return Signing{}, errs.New(errs.FailedPrecondition, "key %q has purpose %s, not %s", id, k.Purpose, p)
	}
	g, ok := k.Active()
	if !ok {
		return Signing{}, errs.New(errs.FailedPrecondition, "key %q has no active generation", id)
	}
	b, ok := r.backends[k.Backend]
	if !ok {
		return Signing{}, errs.New(errs.FailedPrecondition, "key %q lives in backend %q, which is not configured", id, k.Backend)
	}
	return Signing{Key: k, Generation: g, Backend: b}, nil
}

// CreateSpec describes a new key.
type CreateSpec struct {
	ID        string
	Purpose   Purpose
	Algorithm signer.Algorithm
	RSABits   int    // RS256/PS256 only; 2048 if zero
	Backend   string // the default backend if empty
}

func (r *Keyring) validate(s *CreateSpec) (signer.KeyManager, error) {
	if err := ValidateID(s.ID); err != nil {
		return nil, err
	}
	if _, err := ParsePurpose(string(s.Purpose)); err != nil {
		return nil, err
	}
	if _, err := signer.ParseAlgorithm(string(s.Algorithm)); err != nil {
		return nil, err
	}
	if err := checkPurpose(s.Purpose, s.Algorithm); err != nil {
		return nil, err
	}
	switch {
	case s.Algorithm.IsRSA() && s.RSABits == 0:
		s.RSABits = 2048
	case !s.Algorithm.IsRSA() && s.RSABits != 0:
		return nil, errs.New(errs.InvalidArgument, "RSA key size given for %s", s.Algorithm)
	}
	if s.Backend == "" {
		s.Backend = r.defaultBackend
	}
	b, ok := r.backends[s.Backend]
	if !ok {
		return nil, errs.New(errs.InvalidArgument, "unknown backend %q", s.Backend)
	}
	km, ok := b.(signer.KeyManager)
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "backend %q cannot create keys", s.Backend)
	}
	return km, nil
}

// Create makes key s.ID with an active first generation, generated inside
// its backend.
func (r *Keyring) Create(ctx context.Context, s CreateSpec) (*Key, error) {
	km, err := r.validate(&s)
	if err != nil {
		return nil, err
	}
	if err := r.clearAbandoned(ctx, s.ID); err != nil {
		return nil, err
	}
	now := r.now().UTC()
	name := fmt.Sprintf("%s.g1", s.ID)
	k := &Key{
		ID: s.ID, Purpose: s.Purpose, Algorithm: s.Algorithm, RSABits: s.RSABits, Backend: s.Backend,
		CreatedAt: now, UpdatedAt: now,
		Generations: []Generation{{Number: 1, State: StateCreating, Name: name, Ref: km.NameRef(name), CreatedAt: now, UpdatedAt: now}},
	}
	if k.Revision, err = r.store.Put(ctx, k); err != nil {
		return nil, err
	}
	info, err := km.CreateKey(ctx, signer.CreateKeyRequest{Name: name, Algorithm: s.Algorithm, RSABits: s.RSABits})
	if err == nil {
		err = r.complete(ctx, k, info)
	}
	if err != nil {
		r.abandon(ctx, k)
		return nil, err
	}
	return k.clone(), nil
}

// complete records the generated key pair and makes generation 1 active.
func (r *Keyring) complete(ctx context.Context, k *Key, info signer.KeyInfo) error {
	der, err := signer.MarshalPublicKey(info.Public)
	if err != nil {
		return errs.New(errs.Internal, "encoding public key: %w", err)
	}
	g := &k.Generations[0]
	g.State, g.Ref, g.PublicKey, g.UpdatedAt = StateActive, info.Ref, der, r.now().UTC()
	rev, err := r.store.Put(ctx, k)
	if err != nil {
		g.State = StateCreating
		return err
	}
	k.Revision = rev
	return r.remember(k)
}

// clearAbandoned removes a stale "creating" record for id, and its key
// pair if one was made. A visible key, or a creation still in progress,
// is left alone (Create's Put then reports AlreadyExists).
func (r *Keyring) clearAbandoned(ctx context.Context, id string) error {
	k, err := r.store.Get(ctx, id)
	if errs.Is(err, errs.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !k.visible() && r.stale(k) {
		return r.abandon(ctx, k)
	}
	return nil
}

func (r *Keyring) stale(k *Key) bool { return r.now().Sub(k.UpdatedAt) > staleAfter }

// abandon destroys the key pairs of a never-completed key and deletes its
// record. Errors are logged and returned; the record stays for a later
// attempt if anything could not be removed.
func (r *Keyring) abandon(ctx context.Context, k *Key) error {
	if k.visible() {
		return errs.New(errs.Internal, "refusing to abandon key %q, which has usable generations", k.ID)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var failed []error
	km, _ := r.backends[k.Backend].(signer.KeyManager)
	for _, g := range k.Generations {
		if g.State != StateCreating || km == nil {
			continue
		}
		if err := km.DestroyKey(ctx, km.NameRef(g.Name)); err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) == 0 {
		if err := r.store.Delete(ctx, k.ID, k.Revision); err != nil && !errs.Is(err, errs.NotFound) {
			failed = append(failed, err)
		}
	}
	err := errors.Join(failed...)
	if err != nil {
		r.log.Warn("half-created key left for a later cleanup", "key", k.ID, "err", err)
	}
	return err
}
