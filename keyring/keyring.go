package keyring

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// cleanupTimeout bounds the cleanup of a half-created generation. Cleanup
// runs on a context detached from the caller's cancellation: a client that
// gives up must not leave a key pair behind in the HSM.
const cleanupTimeout = 30 * time.Second

// DefaultCreatingGrace is how old a "creating" generation (or an empty
// key record) must be before it is treated as abandoned by a crash rather
// than in progress on another replica.
const DefaultCreatingGrace = 2 * time.Minute

// DefaultSweepInterval is how often backends are listed for objects no
// key records, and DefaultOrphanGrace how long such an object must stay
// unrecorded before it is destroyed.
const (
	DefaultSweepInterval = 10 * time.Minute
	DefaultOrphanGrace   = 10 * time.Minute
)

// DefaultRetention is how long retired and revoked generations keep their
// objects in the backend before they are destroyed.
const DefaultRetention = 7 * 24 * time.Hour

// Keyring is the in-memory, store-backed view of every key.
type Keyring struct {
	store          Store
	backends       map[string]signer.Backend
	defaultBackend string
	now            func() time.Time
	log            *slog.Logger
	retention      time.Duration
	creatingGrace  time.Duration
	sweepEvery     time.Duration
	orphanGrace    time.Duration
	onRepair       func(Repair)
	owner          []byte // marks the backend keys this keyring makes (see ownerOf)

	mu       sync.RWMutex
	keys     map[string]*Key // every stored key, parsed; invisible ones too
	watchers []func()

	repairs sync.Map // RepairKind -> *atomic.Uint64
	gate    atomic.Pointer[func(ctx context.Context, id string) error]

	ticking   sync.Mutex // one Tick at a time in this process; guards the sweep state
	lastSweep time.Time
	orphans   map[string]time.Time // backend+ref of unrecorded objects -> first seen
}

// Options configure a Keyring.
type Options struct {
	Store          Store
	Backends       map[string]signer.Backend
	DefaultBackend string
	Now            func() time.Time // time.Now if nil; tests inject a fake clock
	Logger         *slog.Logger
	Retention      time.Duration // DefaultRetention if zero
	// SoleWriter says no other process writes the store (bbolt): a
	// creation found unfinished at start was abandoned by a crash and is
	// rolled back at once. Otherwise it waits out CreatingGrace.
	SoleWriter    bool
	CreatingGrace time.Duration // DefaultCreatingGrace if zero
	SweepInterval time.Duration // DefaultSweepInterval if zero
	OrphanGrace   time.Duration // DefaultOrphanGrace if zero
	// OnRepair, if set, learns of every repair the keyring makes by
	// itself (for the audit log and metrics); each is logged too.
	OnRepair func(Repair)
}

// Repair is a change the keyring made by itself to heal a fault.
type Repair struct {
	Kind       RepairKind
	KeyID      string
	Generation int
	Backend    string
	Ref        string // the backend reference it touched, if any
}

// RepairKind names what a repair did.
type RepairKind string

// The repairs.
const (
	// RepairRollback removed an unfinished creation and its objects.
	RepairRollback RepairKind = "rollback"
	// RepairOrphan destroyed a backend object that no key records.
	RepairOrphan RepairKind = "orphan_destroyed"
	// RepairActivate gave a scheduled key (JWT) found without an active generation a
	// new one: an alarm, since tokens could not be minted meanwhile.
	RepairActivate RepairKind = "active_restored"
)

// New loads every key from the store and cleans up abandoned creations.
func New(ctx context.Context, o Options) (*Keyring, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Retention = cmp.Or(o.Retention, DefaultRetention)
	o.CreatingGrace = cmp.Or(o.CreatingGrace, DefaultCreatingGrace)
	o.SweepInterval = cmp.Or(o.SweepInterval, DefaultSweepInterval)
	o.OrphanGrace = cmp.Or(o.OrphanGrace, DefaultOrphanGrace)
	if _, ok := o.Backends[o.DefaultBackend]; !ok && o.DefaultBackend != "" {
		return nil, errs.New(errs.InvalidArgument, "default_backend %q is not a configured backend", o.DefaultBackend)
	}
	var err error
	r := &Keyring{store: o.Store, backends: o.Backends, defaultBackend: o.DefaultBackend, now: o.Now,
		log: o.Logger, retention: o.Retention, creatingGrace: o.CreatingGrace, sweepEvery: o.SweepInterval,
		orphanGrace: o.OrphanGrace, onRepair: o.OnRepair, keys: map[string]*Key{}, orphans: map[string]time.Time{}}
	if r.owner, err = ownerOf(ctx, o.Store); err != nil {
		return nil, err
	}
	stored, err := r.store.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range stored {
		if err := r.remember(k); err != nil {
			return nil, fmt.Errorf("loading key %q: %w", k.ID, err)
		}
	}
	grace := r.creatingGrace
	if o.SoleWriter {
		grace = 0
	}
	for _, k := range stored {
		r.dropStale(ctx, k, grace)
	}
	return r, nil
}

// Owner is the mark this keyring puts on the keys it makes (see ownerOf).
func (r *Keyring) Owner() []byte { return slices.Clone(r.owner) }

// ownerAnchor names the keyring's owner mark in the store.
const ownerAnchor = "keyring/owner"

// ownerOf returns the mark this keyring puts on the keys it makes in its
// backends (CreateKeyRequest.Owner), so its sweep lists only those: a
// token or KMS account shared with another deployment is safe. It is made
// at random on first start and kept in the store; a store that keeps no
// anchors gets a mark of its own for this run, and its sweep then finds
// only this run's keys (it never wrongly destroys).
func ownerOf(ctx context.Context, store Store) ([]byte, error) {
	fresh := make([]byte, 4)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	a, ok := store.(Anchors)
	if !ok {
		return fresh, nil
	}
	b, err := a.GetAnchor(ctx, ownerAnchor)
	if errs.Is(err, errs.NotFound) {
		if err := a.PutAnchor(ctx, ownerAnchor, fresh); err != nil {
			return nil, err
		}
		b, err = a.GetAnchor(ctx, ownerAnchor) // another replica may have won the race
	}
	if err != nil {
		return nil, fmt.Errorf("the keyring's owner mark: %w", err)
	}
	return b, nil
}

// repaired logs, counts and reports a repair.
func (r *Keyring) repaired(rep Repair) {
	r.log.Warn("keyring repaired itself", "repair", string(rep.Kind), "key", rep.KeyID, "generation", rep.Generation, "backend", rep.Backend)
	n, _ := r.repairs.LoadOrStore(rep.Kind, new(atomic.Uint64))
	n.(*atomic.Uint64).Add(1)
	if r.onRepair != nil {
		r.onRepair(rep)
	}
}

// scheduled reports a step the scheduler took by itself on a key's
// lifecycle (a deletion started, a key deleted, a generation's objects
// destroyed): not a repair, but audited as one is, through OnRepair.
func (r *Keyring) scheduled(ev Repair) {
	r.log.Info("keyring lifecycle step", "step", string(ev.Kind), "key", ev.KeyID, "generation", ev.Generation, "backend", ev.Backend)
	if r.onRepair != nil {
		r.onRepair(ev)
	}
}

// Repairs counts the repairs of kind made since start, for metrics.
func (r *Keyring) Repairs(kind RepairKind) uint64 {
	if n, ok := r.repairs.Load(kind); ok {
		return n.(*atomic.Uint64).Load()
	}
	return 0
}

// The scheduler's own lifecycle steps, reported as Repairs of these kinds
// (not counted as repairs).
const (
	StepDeletionStarted RepairKind = "deletion_started"
	StepDestroyed       RepairKind = "generation_destroyed"
	StepDeleted         RepairKind = "key_deleted"
)

// IsRepair reports whether kind is a repair, not a lifecycle step.
func (kind RepairKind) IsRepair() bool { return slices.Contains(RepairKinds, kind) }

// RepairKinds lists every kind of repair.
var RepairKinds = []RepairKind{RepairRollback, RepairOrphan, RepairActivate}

// Follow keeps memory in step with a store other replicas write to: it
// reloads every key, then applies the store's changes as they come, and
// reloads again whenever the watch breaks (a compaction, a lost cluster),
// until ctx ends. While the store is away, memory keeps serving reads.
func (r *Keyring) Follow(ctx context.Context, w Watcher) {
	for ctx.Err() == nil {
		keys, rev, err := w.ListAt(ctx)
		if err == nil {
			r.replaceAll(keys, rev)
			err = w.Watch(ctx, rev, func(k *Key) {
				if err := r.remember(k); err != nil {
					r.log.Error("a key from the store does not load", "key", k.ID, "err", err)
				}
			}, r.forgetBefore)
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("following the keyring store failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// replaceAll makes memory hold exactly keys, listed at store revision
// rev (newer revisions win). A key memory holds at a later revision than
// the listing was written after it (by this replica, a moment ago) and
// stays: the decision to forget is taken under the lock that forgets, on
// the revision memory holds then.
func (r *Keyring) replaceAll(keys []*Key, rev int64) {
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k.ID] = true
		if err := r.remember(k); err != nil {
			r.log.Error("a key from the store does not load", "key", k.ID, "err", err)
		}
	}
	r.mu.Lock()
	forgot := false
	for id, k := range r.keys {
		if !seen[id] && k.Revision <= rev {
			delete(r.keys, id)
			forgot = true
		}
	}
	r.mu.Unlock()
	if forgot {
		r.Changed()
	}
}

// Watch registers fn to run after every change to the keyring.
func (r *Keyring) Watch(fn func()) {
	r.mu.Lock()
	r.watchers = append(r.watchers, fn)
	r.mu.Unlock()
}

// remember parses k's public keys and makes it the in-memory copy, unless
// memory already holds a newer revision.
func (r *Keyring) remember(k *Key) error {
	for i := range k.Generations {
		g := &k.Generations[i]
		if len(g.PublicKey) == 0 || g.public != nil {
			continue
		}
		pub, err := signer.ParsePublicKey(g.PublicKey)
		if err != nil {
			return errs.New(errs.Internal, "generation %d public key: %w", g.Number, err)
		}
		kid, err := signer.Thumbprint(pub)
		if err != nil {
			return errs.New(errs.Internal, "generation %d: %w", g.Number, err)
		}
		g.public, g.kid = pub, kid
	}
	r.decodePolicy(k)
	r.mu.Lock()
	if cur, ok := r.keys[k.ID]; !ok || cur.Revision < k.Revision {
		r.keys[k.ID] = k
	}
	r.mu.Unlock()
	r.Changed()
	return nil
}

// decodePolicy decodes k's stored policy with its purpose's codec (an
// empty one too: the purpose gives its default), and derives attributes a
// record lacks (one rewritten by an older Sigil). A key of a purpose this
// binary lacks is kept (its objects stay accounted for) but signs nothing:
// no handler asks for that purpose. A stored policy that does not decode
// or check is logged and the key refuses to sign and is not rotated until
// it is given a valid one; the keyring still starts.
func (r *Keyring) decodePolicy(k *Key) {
	if k.policy != nil || k.policyErr != nil {
		return
	}
	p, ok := purposeOf(k)
	if !ok {
		r.log.Warn("key of an unknown purpose; it will not sign", "key", k.ID, "purpose", k.Purpose)
		return
	}
	if k.policy, k.policyErr = p.DecodePolicy(k.PolicyJSON); k.policyErr != nil {
		r.log.Error("key's stored policy does not load; it will not sign", "key", k.ID, "err", k.policyErr)
	}
	if len(k.Attributes) > 0 {
		return
	}
	for i := len(k.Generations) - 1; i >= 0; i-- {
		if pub := k.Generations[i].public; pub != nil {
			k.Attributes, _ = p.Attributes(pub)
			return
		}
	}
}

// Changed tells the keyring's followers (Watch) that something they
// derive from changed: a key, or something beside the keys (a JWK Set).
func (r *Keyring) Changed() {
	r.mu.RLock()
	watchers := slices.Clone(r.watchers)
	r.mu.RUnlock()
	for _, w := range watchers {
		w()
	}
}

func (r *Keyring) forget(id string) {
	r.mu.Lock()
	delete(r.keys, id)
	r.mu.Unlock()
	r.Changed()
}

// forgetBefore forgets key id, deleted in the store at revision rev,
// unless memory holds it at a later revision: this replica wrote it again
// after that deletion (a retried creation) and the watch is catching up.
// The decision is taken under the lock that forgets.
func (r *Keyring) forgetBefore(id string, rev int64) {
	r.mu.Lock()
	k, ok := r.keys[id]
	forgot := ok && k.Revision < rev
	if forgot {
		delete(r.keys, id)
	}
	r.mu.Unlock()
	if forgot {
		r.Changed()
	}
}

// current returns a copy of key id as memory holds it, visible or not.
func (r *Keyring) current(id string) (*Key, error) {
	r.mu.RLock()
	k, ok := r.keys[id]
	r.mu.RUnlock()
	if !ok {
		return nil, errs.New(errs.NotFound, "key %q not found", id)
	}
	return k.clone(), nil
}

// Get returns a copy of key id.
func (r *Keyring) Get(_ context.Context, id string) (*Key, error) {
	if err := ValidateName(id); err != nil {
		return nil, err
	}
	k, err := r.current(id)
	if err == nil && !k.visible() {
		err = errs.New(errs.NotFound, "key %q not found", id)
	}
	return k, err
}

// List returns copies of every key, in ID order.
func (r *Keyring) List(ctx context.Context) []*Key { return r.Select(ctx, nil) }

// Select returns copies of the keys match accepts (every key if match is
// nil), in ID order. match sees each key uncopied, under the keyring's
// read lock: it must neither change nor keep it. So a lookup (the key of
// an Ethereum address, on every JSON-RPC call) copies only what it finds.
func (r *Keyring) Select(_ context.Context, match func(*Key) bool) []*Key {
	return r.all(true, match)
}

// all returns copies of the keys match accepts (all if nil) in ID order;
// visibleOnly leaves out keys whose first creation is unfinished.
func (r *Keyring) all(visibleOnly bool, match func(*Key) bool) []*Key {
	r.mu.RLock()
	var out []*Key
	for _, k := range r.keys {
		if (k.visible() || !visibleOnly) && (match == nil || match(k)) {
			out = append(out, k.clone())
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Key) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// errUnchanged, returned by an update function, means "nothing to write".
var errUnchanged = errors.New("unchanged")

// update applies fn to a copy of key id and writes the result with a
// compare-and-swap. If another writer got there first, it reloads the key
// from the store and tries once more. fn returning errUnchanged skips the
// write and returns the key as it is.
func (r *Keyring) update(ctx context.Context, id string, fn func(k *Key, now time.Time) error) (*Key, error) {
	for attempt := 0; ; attempt++ {
		k, err := r.current(id)
		if err != nil {
			return nil, err
		}
		now := r.now().UTC()
		if err := fn(k, now); errors.Is(err, errUnchanged) {
			return k, nil
		} else if err != nil {
			return nil, err
		}
		k.UpdatedAt = now
		rev, err := r.store.Put(ctx, k)
		if errs.Is(err, errs.Aborted) && attempt == 0 {
			if err := r.refresh(ctx, id); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		k.Revision = rev
		if err := r.remember(k); err != nil {
			return nil, err
		}
		return k.clone(), nil
	}
}

// refresh replaces memory's copy of id with the store's.
func (r *Keyring) refresh(ctx context.Context, id string) error {
	k, err := r.store.Get(ctx, id)
	if errs.Is(err, errs.NotFound) {
		r.forget(id)
		return err
	}
	if err != nil {
		return err
	}
	return r.remember(k) // the newer of memory's and the store's copy stays
}

// Signing is what the signing path needs: the key, the generation that
// signs now, and the backend holding it.
type Signing struct {
	Key        *Key
	Generation *Generation
	Backend    signer.Backend
}

// Sign signs input (a digest, or the message for EdDSA) with the
// generation. Its errors name the key and generation, so a KMS key
// deleted or disabled behind Sigil's back is reported as which one.
func (s Signing) Sign(ctx context.Context, input []byte) ([]byte, error) {
	sig, err := s.Backend.Sign(ctx, s.Generation.Ref, s.Key.Algorithm, input)
	if err != nil {
		return nil, fmt.Errorf("key %q generation %d: %w", s.Key.ID, s.Generation.Number, err)
	}
	return sig, nil
}

// ForSigning resolves key id for a signature of the purpose named p.
func (r *Keyring) ForSigning(ctx context.Context, id string, p string) (Signing, error) {
	k, err := r.Get(ctx, id)
	if err != nil {
		return Signing{}, err
	}
	if err := k.CheckPurpose(p); err != nil {
		return Signing{}, err
	}
	if err := usable(k); err != nil {
		return Signing{}, err
	}
	if gate := r.gate.Load(); gate != nil {
		if err := (*gate)(ctx, id); err != nil {
			return Signing{}, err
		}
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

// SetGate makes every signature ask gate first, with the key's ID: an
// error refuses it (a frozen namespace's keys sign nothing).
func (r *Keyring) SetGate(gate func(ctx context.Context, id string) error) { r.gate.Store(&gate) }

// SetDisabled disables key id (it refuses to sign) or enables it again.
// The audit key is Sigil's and is never disabled.
func (r *Keyring) SetDisabled(ctx context.Context, id string, disabled bool) (*Key, error) {
	if _, err := r.Get(ctx, id); err != nil {
		return nil, err
	}
	return r.update(ctx, id, func(k *Key, _ time.Time) error {
		if err := changeable(k); err != nil {
			return err
		}
		if k.Disabled == disabled {
			return errUnchanged
		}
		k.Disabled = disabled
		return nil
	})
}

// keyManager returns the backend of k as a KeyManager.
func (r *Keyring) keyManager(k *Key) (signer.KeyManager, error) {
	km, ok := r.backends[k.Backend].(signer.KeyManager)
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "backend %q of key %q is not configured or cannot manage keys", k.Backend, k.ID)
	}
	return km, nil
}
