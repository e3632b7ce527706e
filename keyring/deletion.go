package keyring

import (
	"context"
	"errors"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// The window of a scheduled deletion, as AWS KMS has it: long enough to
// notice a mistake and cancel.
const (
	MinDeletionWindow = 7 * 24 * time.Hour
	MaxDeletionWindow = 30 * 24 * time.Hour
)

// ScheduleDeletion makes key id refuse to sign from now on and, once
// window has passed, has the scheduler destroy every generation's objects
// in the backend and mark the key deleted. Its record stays: the ID is
// never reused.
func (r *Keyring) ScheduleDeletion(ctx context.Context, id string, window time.Duration) (*Key, error) {
	if window < MinDeletionWindow || window > MaxDeletionWindow {
		return nil, errs.New(errs.InvalidArgument, "deletion window %v: 7 to 30 days", window)
	}
	if _, err := r.Get(ctx, id); err != nil {
		return nil, err
	}
	return r.update(ctx, id, func(k *Key, now time.Time) error {
		if err := changeable(k); err != nil {
			return err
		}
		k.DeleteAt = now.Add(window)
		return nil
	})
}

// CancelDeletion takes back key id's scheduled deletion, if the
// scheduler has not started it; the key signs again (unless it is
// disabled). The scheduler starts a deletion with a compare-and-swap on
// the record, as this does, so a cancellation that succeeds is never
// followed by a destruction.
func (r *Keyring) CancelDeletion(ctx context.Context, id string) (*Key, error) {
	if _, err := r.Get(ctx, id); err != nil {
		return nil, err
	}
	return r.update(ctx, id, func(k *Key, now time.Time) error {
		switch {
		case k.Deleted:
			return errs.New(errs.FailedPrecondition, "key %q is deleted", id)
		case k.DeleteAt.IsZero():
			return errs.New(errs.FailedPrecondition, "key %q is not scheduled for deletion", id)
		case k.DeletionStarted || !now.Before(k.DeleteAt):
			return errs.New(errs.FailedPrecondition, "key %q's deletion window has passed; it is being deleted", id)
		}
		k.DeleteAt = time.Time{}
		return nil
	})
}

// deleting performs the next step of the due deletion of key id: first
// it marks the deletion started (in a compare-and-swap that finds it
// still scheduled and due; from then on it cannot be cancelled), then it
// destroys one generation's objects at a time (recorded destroyed after
// the backend forgot them, so a crash in between repeats a harmless
// destroy), waiting out a generation being created, and last, when the
// record shows every generation destroyed, marks the key deleted.
func (r *Keyring) deleting(ctx context.Context, id string) error {
	started := false
	k, err := r.update(ctx, id, func(k *Key, now time.Time) error {
		switch {
		case k.DeletionStarted || k.Deleted:
			return errUnchanged
		case k.DeleteAt.IsZero() || now.Before(k.DeleteAt):
			return errDeletionOff
		}
		k.DeletionStarted, started = true, true
		return nil
	})
	if started && err == nil {
		r.scheduled(Repair{Kind: StepDeletionStarted, KeyID: id, Backend: k.Backend})
	}
	if errors.Is(err, errDeletionOff) {
		return nil // cancelled meanwhile
	}
	if err != nil || k.Deleted {
		return err
	}
	for _, g := range k.Generations {
		switch g.State {
		case StateDestroyed:
		case StateCreating:
			return nil // its creation fails on the mark, or is rolled back; wait
		default:
			return r.destroy(ctx, id, g.Number, g.State)
		}
	}
	_, err = r.update(ctx, id, func(k *Key, _ time.Time) error {
		if k.Deleted {
			return errUnchanged
		}
		for _, g := range k.Generations {
			if g.State != StateDestroyed {
				return errs.New(errs.Aborted, "key %q: generation %d is %s; deletion goes on", id, g.Number, g.State)
			}
		}
		k.Deleted = true
		return nil
	})
	if err == nil {
		r.scheduled(Repair{Kind: StepDeleted, KeyID: id})
	}
	return err
}

// errDeletionOff says a deletion found due in memory was cancelled or
// is not yet due in the store.
var errDeletionOff = errors.New("deletion no longer due")

// deletionPending refuses a key being or to be deleted: nothing may be
// added to it.
func deletionPending(k *Key) error {
	if k.Deleted || !k.DeleteAt.IsZero() {
		return errs.New(errs.FailedPrecondition, "key %q is scheduled for deletion or deleted", k.ID)
	}
	return nil
}

// usable refuses a key that must not sign: disabled, pending deletion or
// deleted.
func usable(k *Key) error {
	switch {
	case k.Deleted:
		return errs.New(errs.FailedPrecondition, "key %q is deleted", k.ID)
	case !k.DeleteAt.IsZero():
		return errs.New(errs.FailedPrecondition, "key %q is scheduled for deletion at %s", k.ID, k.DeleteAt.Format(time.RFC3339))
	case k.Disabled:
		return errs.New(errs.FailedPrecondition, "key %q is disabled", k.ID)
	}
	return nil
}

// changeable refuses a client's change to k: one of Sigil's own keys, or
// a key scheduled for deletion (cancel first) or deleted.
func changeable(k *Key) error {
	if err := notOwn(k); err != nil {
		return err
	}
	switch {
	case k.Deleted:
		return errs.New(errs.FailedPrecondition, "key %q is deleted; its ID stays reserved", k.ID)
	case !k.DeleteAt.IsZero():
		return errs.New(errs.FailedPrecondition, "key %q is scheduled for deletion at %s; cancel the deletion first", k.ID, k.DeleteAt.Format(time.RFC3339))
	}
	return nil
}
