package keyring

import (
	"context"
	"errors"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/failpoint"
	"github.com/sigil-hsm/sigil/signer"
)

// activate makes g the generation that signs; the one that signed before
// starts retiring and stays published for T + S, so every token it signed
// expires before its key leaves the JWKS (invariant 3). Doing both in one
// write keeps exactly one generation active (invariant 1).
func activate(k *Key, g *Generation, now time.Time) {
	for _, old := range k.inState(StateActive) {
		old.State, old.RetiringAt, old.UpdatedAt = StateRetiring, now, now
		old.UnpublishAt = now
		if s, ok := k.schedule(); ok {
			old.UnpublishAt = now.Add(s.MaxTokenTTL + s.Skew)
		}
	}
	if g.PublishedAt.IsZero() {
		g.PublishedAt = now
	}
	g.State, g.ActivatedAt, g.UpdatedAt = StateActive, now, now
}

// publish makes g pending: in the JWKS now, signing from its ActivateAt,
// which is at least A away (invariant 2) and, for a scheduled rotation, no
// earlier than a period after the active generation began to sign. The
// schedule is read here, in the write that publishes: one changed while
// the key pair was being made is the one that counts.
func publish(k *Key, g *Generation, scheduled bool, now time.Time) error {
	s, ok := k.schedule()
	if !ok {
		return errs.New(errs.Aborted, "key %q no longer rotates on a schedule", k.ID)
	}
	planned := now
	if a, ok := k.Active(); ok && scheduled {
		planned = a.ActivatedAt.Add(s.RotateEvery)
	}
	g.State, g.PublishedAt, g.UpdatedAt = StatePending, now, now
	g.ActivateAt = maxTime(planned, now.Add(s.PublishAhead), k.ActivateNotBefore)
	return nil
}

func maxTime(ts ...time.Time) time.Time {
	m := ts[0]
	for _, t := range ts[1:] {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// Tick advances every key's generations through whatever is due now.
// It is idempotent. Within a process a Tick that finds another running
// returns at once; across processes sharing a store, each step is a
// compare-and-swap and a lost race is retried on the next tick.
func (r *Keyring) Tick(ctx context.Context) error {
	if !r.ticking.TryLock() {
		return nil
	}
	defer r.ticking.Unlock()
	var failed []error
	for _, k := range r.all(false, nil) { // unfinished creations too: they may need rolling back
		if k.visible() && rotation(k) != RotateScheduled && k.DeleteAt.IsZero() && len(k.inState(StateRetiring))+len(k.inState(StateRetired))+len(k.inState(StateRevoked))+len(k.inState(StateCreating)) == 0 {
			continue
		}
		// A step may make another due (activation makes the next
		// creation due); the bound stops a runaway loop.
		for range 8 {
			did, err := r.step(ctx, k.ID)
			if err != nil {
				failed = append(failed, err)
			}
			if !did || err != nil {
				break
			}
		}
	}
	if now := r.now(); now.Sub(r.lastSweep) >= r.sweepEvery {
		r.lastSweep = now
		if err := r.sweep(ctx); err != nil {
			failed = append(failed, err)
		}
		if err := r.sweepImports(ctx); err != nil {
			failed = append(failed, err)
		}
	}
	return errors.Join(failed...)
}

// Run ticks every interval until ctx ends, logging failed steps.
func (r *Keyring) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := r.Tick(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("rotation step failed; retrying on the next tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// NextRotation is, for a key that rotates on a schedule, when its next
// generation is published (zero if one is pending already) and when it
// starts signing, as step will make them.
func (k *Key) NextRotation() (publish, activate time.Time, ok bool) {
	sched, scheduled := k.schedule()
	if !scheduled || rotation(k) != RotateScheduled || !k.DeleteAt.IsZero() || k.Deleted {
		return time.Time{}, time.Time{}, false
	}
	if pending := k.inState(StatePending); len(pending) > 0 {
		return time.Time{}, pending[len(pending)-1].ActivateAt, true
	}
	a, active := k.Active()
	if !active {
		return time.Time{}, time.Time{}, false
	}
	publish = a.ActivatedAt.Add(sched.RotateEvery - sched.PublishAhead)
	return publish, publish.Add(sched.PublishAhead), true
}

// step performs the first step that is due for key id, if any.
func (r *Keyring) step(ctx context.Context, id string) (bool, error) {
	k, err := r.current(id)
	if errs.Is(err, errs.NotFound) { // a rolled-back creation is gone
		return false, nil
	}
	if err != nil {
		return false, err
	}
	now := r.now()
	if r.dropStale(ctx, k, r.creatingGrace) {
		return true, nil
	}
	switch {
	case k.Deleted:
		return false, nil
	case k.DeletionStarted || !k.DeleteAt.IsZero() && !now.Before(k.DeleteAt):
		return true, r.deleting(ctx, k.ID)
	}
	for _, g := range k.inState(StateRetired) {
		if !now.Before(g.DestroyAt) {
			return true, r.destroy(ctx, id, g.Number, StateRetired)
		}
	}
	for _, g := range k.inState(StateRevoked) {
		if !now.Before(g.DestroyAt) {
			return true, r.destroy(ctx, id, g.Number, StateRevoked)
		}
	}
	for _, g := range k.inState(StateRetiring) {
		if !now.Before(g.UnpublishAt) {
			return true, r.retire(ctx, id, g.Number)
		}
	}
	sched, ok := k.schedule()
	if !ok || rotation(k) != RotateScheduled || !k.DeleteAt.IsZero() {
		return false, nil // a key pending deletion gets no new generation
	}
	if pending := k.inState(StatePending); len(pending) > 0 {
		g := pending[len(pending)-1]
		_, active := k.Active()
		if !now.Before(g.ActivateAt) || !active {
			return true, r.activateGeneration(ctx, id, g.Number)
		}
		return false, nil
	}
	a, active := k.Active()
	switch {
	case len(k.inState(StateCreating)) > 0:
		return false, nil // a creation in flight, or one to roll back later
	case !active:
		return true, r.restoreActive(ctx, id)
	case !now.Before(a.ActivatedAt.Add(sched.RotateEvery - sched.PublishAhead)):
		_, err := r.addGeneration(ctx, id, nil, func(k *Key, g *Generation, now time.Time) error { return publish(k, g, true, now) })
		return true, err
	}
	return false, nil
}

// restoreActive gives a scheduled key found without an active generation (a
// crash, a store edited by hand) a new one that signs at once.
func (r *Keyring) restoreActive(ctx context.Context, id string) error {
	k, err := r.addGeneration(ctx, id, nil, func(k *Key, g *Generation, now time.Time) error {
		if _, ok := k.Active(); ok {
			return errs.New(errs.Aborted, "key %q has an active generation again", id)
		}
		activate(k, g, now)
		return nil
	})
	if err != nil {
		return err
	}
	g, _ := k.Active()
	r.repaired(Repair{Kind: RepairActivate, KeyID: id, Generation: g.Number, Backend: k.Backend, Ref: g.Ref})
	return nil
}

func (r *Keyring) activateGeneration(ctx context.Context, id string, n int) error {
	_, err := r.update(ctx, id, func(k *Key, now time.Time) error {
		g, ok := k.generation(n)
		if !ok || g.State != StatePending {
			return errUnchanged
		}
		activate(k, g, now)
		return nil
	})
	return err
}

func (r *Keyring) retire(ctx context.Context, id string, n int) error {
	_, err := r.update(ctx, id, func(k *Key, now time.Time) error {
		g, ok := k.generation(n)
		if !ok || g.State != StateRetiring {
			return errUnchanged
		}
		g.State, g.RetiredAt, g.DestroyAt, g.UpdatedAt = StateRetired, now, now.Add(r.retention), now
		return nil
	})
	return err
}

// destroy deletes generation n's objects from the backend, then records it
// destroyed, dropping the oldest destroyed generations past KeepDestroyed.
func (r *Keyring) destroy(ctx context.Context, id string, n int, from State) error {
	var ref, backend string
	err := r.destroyThenUpdate(ctx, id, n, from, func(k *Key, now time.Time) error {
		g, _ := k.generation(n)
		g.State, g.UpdatedAt = StateDestroyed, now
		ref, backend = g.Ref, k.Backend
		k.pruneDestroyed()
		return nil
	})
	if err == nil && ref != "" {
		r.scheduled(Repair{Kind: StepDestroyed, KeyID: id, Generation: n, Backend: backend, Ref: ref})
	}
	return err
}

// Rotate starts a new generation of key id, as its purpose's Rotation
// says. A scheduled key's is published now and signs once the
// publish-ahead time has passed; with immediate it signs at once (an
// emergency: relying parties that cache the JWKS may reject its tokens
// until their cache expires). A pending generation is reused. An
// on-demand key's new generation signs at once, and the one before
// retires (it still verifies until it is destroyed). Keys whose public
// key is their identity (Ethereum addresses) do not rotate.
func (r *Keyring) Rotate(ctx context.Context, id string, immediate bool) (*Key, error) {
	return r.rotate(ctx, id, immediate, nil)
}

// rotate is Rotate, the new generation's pair unwrapped from material if
// there is one (a pending generation is then not reused).
func (r *Keyring) rotate(ctx context.Context, id string, immediate bool, material *signer.Import) (*Key, error) {
	k, err := r.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := changeable(k); err != nil {
		return nil, err
	}
	_, scheduled := k.schedule()
	switch rotation(k) {
	case RotateOnDemand:
		return r.addGeneration(ctx, id, material, func(k *Key, g *Generation, now time.Time) error { activate(k, g, now); return nil })
	case RotateNever:
		return nil, errs.New(errs.FailedPrecondition, "key %q has purpose %s, whose keys do not rotate (the public key is the key's identity)", id, k.Purpose)
	}
	if !scheduled {
		return nil, errs.New(errs.Internal, "key %q rotates on a schedule but its policy has none", id)
	}
	if pending := k.inState(StatePending); len(pending) > 0 && material == nil {
		if !immediate {
			return k, nil
		}
		if err := r.activateGeneration(ctx, id, pending[len(pending)-1].Number); err != nil {
			return nil, err
		}
		return r.Get(ctx, id)
	}
	return r.addGeneration(ctx, id, material, func(k *Key, g *Generation, now time.Time) error {
		if immediate {
			activate(k, g, now)
			return nil
		}
		return publish(k, g, false, now)
	})
}

// Revoke takes generation n of key id out of use at once: it is
// unpublished and never signs again. Revoking the active generation of a
// scheduled key activates a replacement in the same write (the newest pending
// generation, or a new one made first), so the key never lacks an active
// generation; if the replacement cannot be made, nothing changes.
func (r *Keyring) Revoke(ctx context.Context, id string, n int) (*Key, error) {
	k, err := r.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := notOwn(k); err != nil {
		return nil, err
	}
	if k.Deleted {
		return nil, errs.New(errs.FailedPrecondition, "key %q is deleted", id)
	}
	scheduled := rotation(k) == RotateScheduled && k.DeleteAt.IsZero()
	revoke := func(k *Key, now time.Time) (*Generation, error) {
		g, ok := k.generation(n)
		switch {
		case !ok || g.State == StateCreating:
			return nil, errs.New(errs.NotFound, "key %q has no generation %d", id, n)
		case g.State == StateRevoked:
			return nil, errUnchanged
		case !g.Published():
			return nil, errs.New(errs.FailedPrecondition, "generation %d of key %q is %s; only published generations are revoked", n, id, g.State)
		}
		wasActive := g.State == StateActive
		g.State, g.RevokedAt, g.DestroyAt, g.UpdatedAt = StateRevoked, now, now.Add(r.retention), now
		if pending := k.inState(StatePending); wasActive && len(pending) > 0 {
			activate(k, pending[len(pending)-1], now)
		} else if wasActive && scheduled {
			return g, errNeedReplacement
		}
		return g, nil
	}
	if g, ok := k.generation(n); ok && g.State == StateActive && scheduled && len(k.inState(StatePending)) == 0 {
		k, err = r.addGeneration(ctx, id, nil, func(k *Key, g *Generation, now time.Time) error {
			switch _, err := revoke(k, now); {
			case errors.Is(err, errUnchanged):
				return errs.New(errs.Aborted, "generation %d of key %q was revoked meanwhile", n, id)
			case err != nil && !errors.Is(err, errNeedReplacement):
				return err
			}
			activate(k, g, now)
			return nil
		})
	} else {
		k, err = r.update(ctx, id, func(k *Key, now time.Time) error {
			_, err := revoke(k, now)
			if errors.Is(err, errNeedReplacement) { // became the active one meanwhile
				return errs.New(errs.Aborted, "generation %d of key %q became active meanwhile; retry", n, id)
			}
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	failpoint.Hit("revoke.after-commit")
	r.disable(ctx, k, n)
	return k, nil
}

// errNeedReplacement says a revocation left a scheduled key without an active
// generation: it must come with a replacement.
var errNeedReplacement = errors.New("the revoked generation needs a replacement")

// disable asks a backend that can (a KMS) to refuse generation n's key
// itself. The revocation holds in Sigil either way; a failure is logged.
func (r *Keyring) disable(ctx context.Context, k *Key, n int) {
	d, ok := r.backends[k.Backend].(signer.KeyDisabler)
	g, found := k.generation(n)
	if !ok || !found {
		return
	}
	if err := d.DisableKey(ctx, g.Ref); err != nil {
		r.log.Warn("revoked generation could not be disabled in its backend", "key", k.ID, "generation", n, "err", err)
	}
}

// SetPolicy replaces the policy of key id, which must be of the purpose
// named purpose, with what that purpose makes of requested over the
// current one. When both carry a schedule, a change that shortens how
// long relying parties may cache public keys holds back the next
// activation until caches taken under the old schedule have expired, and
// retiring generations stay published as long as either schedule says.
// Each of checks sees the current policy and the next, inside the atomic
// update, and can refuse the change: a decision made on the policy a
// moment ago (say, that the change does not loosen it) holds for the
// policy it replaces.
func (r *Keyring) SetPolicy(ctx context.Context, id, purpose string, requested any, checks ...func(cur, next any) error) (*Key, error) {
	if _, err := r.Get(ctx, id); err != nil {
		return nil, err
	}
	return r.update(ctx, id, func(k *Key, now time.Time) error {
		p, ok := purposeOf(k)
		switch {
		case !ok || k.Purpose != purpose:
			return errs.New(errs.FailedPrecondition, "key %q has purpose %s; this policy applies to %s keys", id, k.Purpose, purpose)
		case changeable(k) != nil:
			return changeable(k)
		}
		next, err := p.UpdatePolicy(k.policy, requested)
		if err != nil {
			return err
		}
		if err := r.checkPolicy(ctx, p, k.ID, k.Algorithm, next); err != nil {
			return err
		}
		for _, check := range checks {
			if err := check(k.policy, next); err != nil {
				return err
			}
		}
		old, wasScheduled := k.schedule()
		if err := k.setPolicy(next); err != nil {
			return err
		}
		if nextSched, ok := k.schedule(); ok && wasScheduled {
			reschedule(k, old, nextSched, now)
		}
		return nil
	})
}

// reschedule holds k's pending activations and retiring generations to
// what a change from schedule old to next requires.
func reschedule(k *Key, old, next Schedule, now time.Time) {
	floor := now.Add(old.MaxAge() + next.Skew)
	k.ActivateNotBefore = maxTime(k.ActivateNotBefore, floor)
	for _, g := range k.inState(StatePending) {
		g.ActivateAt = maxTime(g.ActivateAt, floor)
	}
	for _, g := range k.inState(StateRetiring) {
		g.UnpublishAt = maxTime(g.UnpublishAt, g.RetiringAt.Add(max(old.MaxTokenTTL, next.MaxTokenTTL)+next.Skew))
	}
}

// rotation is how key k rotates: as its purpose says, never for a purpose
// this binary lacks.
func rotation(k *Key) Rotation {
	if p, ok := purposeOf(k); ok {
		return p.Rotation()
	}
	return RotateNever
}

// notOwn refuses to let a client change one of Sigil's own keys.
func notOwn(k *Key) error {
	if k.Purpose == PurposeAudit {
		return errs.New(errs.FailedPrecondition, "key %q signs the audit trail's checkpoints and is managed by Sigil", k.ID)
	}
	return nil
}
