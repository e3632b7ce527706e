package keyring

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/failpoint"
	"github.com/sigil-hsm/sigil/signer"
)

// CreateSpec describes a new key.
type CreateSpec struct {
	ID        string
	Purpose   string // the name of a registered Purpose
	Algorithm signer.Algorithm
	RSABits   int    // RS256/PS256 only; 2048 if zero
	Backend   string // the default backend if empty
	// Policy is the purpose's policy as requested (nil: none); the
	// purpose fills in its defaults and checks it.
	Policy any
	// RequestID, if set, names the client's request: a retry of it (same
	// ID, same spec) returns the key instead of AlreadyExists.
	RequestID string
	// Labels, Owner and Description are the key's inventory.
	Labels      map[string]string
	Owner       string
	Description string

	own      bool           // one of Sigil's own keys, made by the keyring itself
	imported *signer.Import // the pair is unwrapped from this (Import), not generated
}

// validate checks s and completes it: the policy its purpose makes of the
// requested one, the default RSA size and backend.
func (r *Keyring) validate(ctx context.Context, s *CreateSpec) error {
	if err := ValidateName(s.ID); err != nil {
		return err
	}
	if len(s.RequestID) > 128 || strings.ContainsFunc(s.RequestID, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return errs.New(errs.InvalidArgument, "request ID: at most 128 printable ASCII bytes")
	}
	if !s.own && strings.HasPrefix(s.ID, "sigil.") {
		return errs.New(errs.InvalidArgument, "key IDs starting with \"sigil.\" are reserved for Sigil's own keys")
	}
	p, err := LookupPurpose(s.Purpose)
	if s.own {
		p, err = auditPurpose{}, nil
	}
	if err != nil {
		return err
	}
	if _, err := signer.ParseAlgorithm(string(s.Algorithm)); err != nil {
		return err
	}
	if err := p.CheckAlgorithm(s.Algorithm); err != nil {
		return err
	}
	switch {
	case s.Algorithm.IsRSA() && s.RSABits == 0:
		s.RSABits = 2048
	case !s.Algorithm.IsRSA() && s.RSABits != 0:
		return errs.New(errs.InvalidArgument, "RSA key size given for %s", s.Algorithm)
	case s.Algorithm.IsRSA() && s.RSABits != 2048 && s.RSABits != 3072:
		return errs.New(errs.InvalidArgument, "RSA key size %d: 2048 or 3072", s.RSABits)
	}
	if s.Policy, err = p.NewPolicy(s.Policy); err != nil {
		return err
	}
	if err := r.checkPolicy(ctx, p, s.ID, s.Algorithm, s.Policy); err != nil {
		return err
	}
	if err := CheckLabels(s.Labels); err != nil {
		return err
	}
	if err := CheckInventory(s.Owner, s.Description); err != nil {
		return err
	}
	if s.Backend == "" {
		s.Backend = r.defaultBackend
	}
	if _, ok := r.backends[s.Backend]; !ok {
		return errs.New(errs.InvalidArgument, "unknown backend %q", s.Backend)
	}
	return nil
}

// Create makes key s.ID with an active first generation, generated inside
// its backend.
func (r *Keyring) Create(ctx context.Context, s CreateSpec) (*Key, error) {
	if err := r.validate(ctx, &s); err != nil {
		return nil, err
	}
	if k, err := r.current(s.ID); err == nil && !k.visible() {
		r.dropStale(ctx, k, r.creatingGrace) // a creation that crashed long ago
	}
	if k, ok := r.sameKey(s); ok {
		return k, nil // a retry: the key is there already
	}
	now := r.now().UTC()
	k := &Key{ID: s.ID, Purpose: s.Purpose, Algorithm: s.Algorithm, RSABits: s.RSABits, Backend: s.Backend,
		RequestID: s.RequestID, Labels: s.Labels, Owner: s.Owner, Description: s.Description, CreatedAt: now, UpdatedAt: now}
	if len(k.Labels) == 0 {
		k.Labels = nil
	}
	if err := k.setPolicy(s.Policy); err != nil {
		return nil, err
	}
	// The first record already holds the generation being created: the
	// scheduler, finding it, leaves the key to this creation instead of
	// giving a key with no active generation one of its own. The store's
	// compare-and-swap, not timing, orders the two.
	g, km, err := r.reserveGeneration(k, now, s.imported)
	if err != nil {
		return nil, err
	}
	if s.imported != nil {
		k.Origin = OriginImported
	}
	rev, err := r.store.Put(ctx, k)
	if errs.Is(err, errs.AlreadyExists) {
		if err := r.refresh(ctx, s.ID); err == nil {
			if k, ok := r.sameKey(s); ok {
				return k, nil // another request of the same creation won the race
			}
			if cur, err := r.current(s.ID); err == nil && !cur.visible() && slices.ContainsFunc(cur.Generations, func(g Generation) bool { return g.Abandoned }) {
				return nil, errs.New(errs.Unavailable, "key %q: an earlier creation failed while backend %q was unavailable and is rolled back once it answers", s.ID, cur.Backend)
			}
		}
	}
	if err != nil && !errs.Is(err, errs.AlreadyExists) {
		if stored, ok := r.ownRecord(ctx, s.ID, g); ok {
			rev, err = stored.Revision, nil // the write's answer was lost, not the write
		}
	}
	if err != nil {
		return nil, err
	}
	k.Revision = rev
	if err := r.remember(k); err != nil {
		return nil, err
	}
	failpoint.Hit("create.after-record")
	return r.generate(ctx, k, g, km, func(k *Key, g *Generation, now time.Time) error { activate(k, g, now); return nil })
}

// ownRecord returns key id as the store holds it if that is the record a
// creation wrote, reserving generation g (its reference is random), though
// the write answered an error: its answer was lost after the commit.
func (r *Keyring) ownRecord(ctx context.Context, id string, g Generation) (*Key, bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	k, err := r.store.Get(ctx, id)
	if err != nil {
		return nil, false
	}
	cur, ok := k.generation(g.Number)
	return k, ok && cur.Ref == g.Ref && len(k.Generations) == 1
}

// sameKey returns key s.ID if it exists, made by a request with s's
// request ID and the spec s asks for: a retry of that request.
func (r *Keyring) sameKey(s CreateSpec) (*Key, bool) {
	k, err := r.current(s.ID)
	if err != nil || !k.visible() || deletionPending(k) != nil || s.RequestID == "" || k.RequestID != s.RequestID || k.Purpose != s.Purpose ||
		k.Algorithm != s.Algorithm || k.RSABits != s.RSABits || k.Backend != s.Backend ||
		k.Owner != s.Owner || k.Description != s.Description || !maps.Equal(k.Labels, s.Labels) {
		return nil, false
	}
	want, err := json.Marshal(s.Policy)
	if err != nil {
		return nil, false
	}
	if s.Policy == nil {
		want = nil
	}
	return k, bytes.Equal(k.PolicyJSON, want)
}

// EnsureAuditKey returns the key that signs audit checkpoints, creating
// it (ES256, in the default backend) on first start. Replicas starting
// together race to create it; the losers wait for the winner's key.
func (r *Keyring) EnsureAuditKey(ctx context.Context) (*Key, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		k, err := r.Get(ctx, AuditKeyID)
		if errs.Is(err, errs.NotFound) {
			k, err = r.Create(ctx, CreateSpec{ID: AuditKeyID, Purpose: PurposeAudit, Algorithm: signer.ES256, own: true})
		}
		if !errs.Is(err, errs.AlreadyExists) {
			return k, err
		}
		// A replica creating it records it before it makes the key pair;
		// with no record, the objects are in the backend from a store
		// that is gone.
		if err := r.refresh(ctx, AuditKeyID); errs.Is(err, errs.NotFound) {
			return nil, errs.New(errs.FailedPrecondition, "the backend holds the objects of Sigil's audit key but this keyring store has no record of them: the store is new, or was lost; restore it from a backup (sigil restore) or recover its records from the HSM (sigil keys recover)")
		}
		select { // another replica is creating it
		case <-ctx.Done():
			return nil, errs.FromContext(ctx, "waiting for another replica to create the audit key")
		case <-time.After(200 * time.Millisecond):
		}
		if err := r.refresh(ctx, AuditKeyID); err != nil && !errs.Is(err, errs.NotFound) {
			return nil, err
		}
	}
}

// AuditSigner signs audit checkpoints with the audit key (r‖s).
type AuditSigner struct{ *Keyring }

// Sign signs a SHA-256 digest with the audit key's active generation.
func (s AuditSigner) Sign(ctx context.Context, digest []byte) ([]byte, error) {
	sg, err := s.ForSigning(ctx, AuditKeyID, PurposeAudit)
	if err != nil {
		return nil, err
	}
	return sg.Sign(ctx, digest)
}

// addGeneration makes the next generation of key id: it records it as
// creating (so a crash leaves a trace), generates the key pair in the
// backend, then lets place give it its first state, in the same write as
// any other change place makes. On failure (place's included) the new
// objects and the record of them are removed, and nothing else changed.
func (r *Keyring) addGeneration(ctx context.Context, id string, material *signer.Import, place func(k *Key, g *Generation, now time.Time) error) (*Key, error) {
	if k, err := r.current(id); err == nil {
		r.dropStale(ctx, k, r.creatingGrace) // an earlier failed creation, if its backend is back
	}
	var g Generation
	var km signer.KeyManager
	k, err := r.update(ctx, id, func(k *Key, now time.Time) error {
		if err := deletionPending(k); err != nil {
			return err
		}
		if creating := k.inState(StateCreating); len(creating) > 0 {
			if creating[0].Abandoned { // rolled back once the backend answers again
				return errs.New(errs.Unavailable, "key %q: generation %d failed while backend %q was unavailable and is rolled back once it answers", id, creating[0].Number, k.Backend)
			}
			return errs.New(errs.Aborted, "key %q: a generation is already being created", id)
		}
		var err error
		g, km, err = r.reserveGeneration(k, now, material)
		return err
	})
	if err != nil {
		return nil, err
	}
	return r.generate(ctx, k, g, km, place)
}

// reserveGeneration adds k's next generation in state creating, with the
// reference its key pair will have. The reference is recorded before the
// key exists: a failed or interrupted creation is cleaned up by it, and it
// finds nothing but this key (never another object under the same name).
func (r *Keyring) reserveGeneration(k *Key, now time.Time, material *signer.Import) (Generation, signer.KeyManager, error) {
	km, err := r.keyManager(k)
	if err == nil {
		km, err = r.pairSource(km, k.Backend, material)
	}
	if err != nil {
		return Generation{}, nil, err
	}
	n := k.nextNumber()
	k.LastGeneration = n
	name := fmt.Sprintf("%s.g%d", k.ID, n)
	ref, err := km.NewRef(name, r.owner)
	if err != nil {
		return Generation{}, nil, err
	}
	g := Generation{Number: n, State: StateCreating, Name: name, Ref: ref, CreatedAt: now, UpdatedAt: now}
	if material != nil {
		g.Origin = OriginImported
	}
	k.Generations = append(k.Generations, g)
	return g, km, nil
}

// generate makes the key pair of k's reserved generation g in the backend,
// then lets place give it its first state, in the same write as any other
// change place makes. On failure (place's included) the new objects and
// the record of them are removed, and nothing else changed.
func (r *Keyring) generate(ctx context.Context, k *Key, g Generation, km signer.KeyManager, place func(k *Key, g *Generation, now time.Time) error) (*Key, error) {
	id := k.ID
	failpoint.Hit("generation.after-record")
	info, err := km.CreateKey(ctx, signer.CreateKeyRequest{Name: g.Name, Ref: g.Ref, Algorithm: k.Algorithm, RSABits: k.RSABits, Owner: r.owner})
	if errs.Is(err, errs.DeadlineExceeded) || errs.Is(err, errs.Canceled) {
		// The backend did not answer: the pair may still be made after
		// this. The record stays "creating" (not abandoned), so a rollback
		// now cannot miss a pair made a moment later; the scheduler rolls
		// it back once it is creatingGrace old.
		r.log.Warn("key generation not answered in time; rolled back after the grace", "key", id, "generation", g.Number, "err", err)
		return nil, err
	}
	if err == nil {
		failpoint.Hit("generation.after-backend")
		k, err = r.update(ctx, id, func(k *Key, now time.Time) error {
			cur, ok := k.generation(g.Number)
			if !ok || cur.State != StateCreating {
				return errs.New(errs.Aborted, "key %q: generation %d was removed while it was created", id, g.Number)
			}
			if err := deletionPending(k); err != nil {
				return err // scheduled for deletion meanwhile: the new pair is rolled back
			}
			der, err := signer.MarshalPublicKey(info.Public)
			if err != nil {
				return errs.New(errs.Internal, "encoding public key: %w", err)
			}
			cur.Ref, cur.PublicKey, cur.UpdatedAt = info.Ref, der, now
			if p, ok := purposeOf(k); ok {
				if k.Attributes, err = p.Attributes(info.Public); err != nil {
					return err
				}
			}
			return place(k, cur, now)
		})
	}
	if err != nil {
		done, known := r.completed(ctx, id, g)
		switch {
		case done != nil:
			return done, nil // the write's answer was lost, not the write
		case !known && info.Ref != "":
			// The pair exists and the store cannot say whether its record
			// was completed: neither success nor a rollback can be
			// answered. A record left creating is rolled back after the
			// grace; a retry with the same request ID finds a completed one.
			return nil, errs.New(errs.Unavailable, "key %q: the outcome of generation %d is unknown (the keyring store did not answer); retry the request", id, g.Number)
		}
		r.dropGeneration(ctx, id, g.Number)
		return nil, err
	}
	return k, nil
}

// completed returns, from the store, key id if its generation g was
// recorded past creating although the write doing that failed: its answer
// was lost (an etcd leader change, a cancelled call) after it committed.
// A creation that succeeded then answers success, not an error.
// It also reports whether the store could be read at all.
func (r *Keyring) completed(ctx context.Context, id string, g Generation) (*Key, bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := r.refresh(ctx, id); err != nil && !errs.Is(err, errs.NotFound) {
		return nil, false
	}
	k, err := r.current(id)
	if err != nil {
		return nil, true
	}
	cur, ok := k.generation(g.Number)
	if !ok || cur.State == StateCreating || cur.Name != g.Name || len(cur.PublicKey) == 0 {
		return nil, true
	}
	return k, true
}

// dropStale rolls back what of k was abandoned: its creating generations
// marked abandoned or older than grace and, if it has none left, its
// record.
func (r *Keyring) dropStale(ctx context.Context, k *Key, grace time.Duration) bool {
	dropped := false
	for _, g := range k.inState(StateCreating) {
		if g.Abandoned && !r.backendUp(k.Backend) {
			continue // tried again once the backend answers
		}
		if g.Abandoned || r.now().Sub(g.CreatedAt) >= grace {
			r.dropGeneration(ctx, k.ID, g.Number)
			dropped = true
		}
	}
	if len(k.Generations) == 0 && r.now().Sub(k.CreatedAt) >= grace {
		r.deleteIfEmpty(ctx, k.ID)
		dropped = true
	}
	return dropped
}

// dropGeneration destroys the key pair of creating generation n, if one
// was made, and removes the generation; a key left with no generations is
// deleted. It is logged, not returned, when that fails: the generation
// stays "creating" and a later attempt cleans it up.
func (r *Keyring) dropGeneration(ctx context.Context, id string, n int) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var rep Repair
	err := r.destroyThenUpdate(ctx, id, n, StateCreating, func(k *Key, _ time.Time) error {
		g, _ := k.generation(n)
		rep = Repair{Kind: RepairRollback, KeyID: id, Generation: n, Backend: k.Backend, Ref: g.Ref}
		k.Generations = slices.DeleteFunc(k.Generations, func(g Generation) bool { return g.Number == n })
		return nil
	})
	if err != nil {
		r.abandon(ctx, id, n)
		r.log.Warn("half-created generation left for a later cleanup", "key", id, "generation", n, "err", err)
		return
	}
	if rep.KeyID != "" {
		r.repaired(rep)
	}
	r.deleteIfEmpty(ctx, id)
}

// backendUp reports whether backend name's health monitor, if it has one,
// finds it up.
func (r *Keyring) backendUp(name string) bool {
	hr, ok := r.backends[name].(signer.HealthReporter)
	return !ok || hr.Health().Up
}

// abandon marks creating generation n of key id as abandoned: its creation
// failed and no one works on it any more, so the next step of the
// scheduler, or the next change to the key, rolls it back at once instead
// of waiting out the grace (a rotation would answer "a generation is
// already being created" until then).
func (r *Keyring) abandon(ctx context.Context, id string, n int) {
	_, err := r.update(ctx, id, func(k *Key, _ time.Time) error {
		g, ok := k.generation(n)
		if !ok || g.State != StateCreating || g.Abandoned {
			return errUnchanged
		}
		g.Abandoned = true
		return nil
	})
	if err != nil {
		r.log.Warn("an abandoned creation could not be marked; it is rolled back after the grace", "key", id, "generation", n, "err", err)
	}
}

// deleteIfEmpty deletes key id if it has no generations: a creation that
// failed before or after its key pair was made.
func (r *Keyring) deleteIfEmpty(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	k, err := r.current(id)
	if err != nil || len(k.Generations) > 0 {
		return
	}
	if err := r.store.Delete(ctx, id, k.Revision); err != nil && !errs.Is(err, errs.NotFound) {
		r.log.Warn("empty key record left for a later cleanup", "key", id, "err", err)
		return
	}
	r.forget(id)
}

// destroyThenUpdate deletes generation n's objects from the backend if it
// is still in state want, then records the change fn makes. Destroying
// first is safe to repeat: a crash in between leaves a record whose
// objects are gone, and destroying nothing is not an error.
func (r *Keyring) destroyThenUpdate(ctx context.Context, id string, n int, want State, fn func(k *Key, now time.Time) error) error {
	// Decide from the store, not memory: a write whose answer was lost
	// (a cancelled context, an etcd leader change) may have committed,
	// and memory would then still show the state before it.
	if err := r.refresh(ctx, id); errs.Is(err, errs.NotFound) {
		return nil
	} else if err != nil {
		return err
	}
	k, err := r.current(id)
	if err != nil {
		return err
	}
	g, ok := k.generation(n)
	if !ok || g.State != want {
		return nil
	}
	km, err := r.keyManager(k)
	if err != nil {
		return err
	}
	// The generation's own reference: its exact objects (a KMS key's ARN
	// once known, which finds it even if its alias is gone).
	if err := km.DestroyKey(ctx, g.Ref); err != nil {
		return err
	}
	failpoint.Hit("destroy.after-backend")
	_, err = r.update(ctx, id, func(k *Key, now time.Time) error {
		if g, ok := k.generation(n); !ok || g.State != want {
			return errUnchanged
		}
		return fn(k, now)
	})
	if errors.Is(err, errUnchanged) {
		err = nil
	}
	return err
}
