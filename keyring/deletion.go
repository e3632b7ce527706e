package keyring

import (
	"context"
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

// CancelDeletion takes back key id's scheduled deletion, if its window
// has not passed; the key signs again (unless it is disabled).
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
		case !now.Before(k.DeleteAt):
			return errs.New(errs.FailedPrecondition, "key %q's deletion window has passed; it is being deleted", id)
		}
		k.DeleteAt = time.Time{}
		return nil
	})
}

// deleting performs the next step of a due deletion of key k: destroy one
// generation's objects (recorded destroyed after the backend forgot
// them, so a crash in between repeats a harmless destroy), or, with none
// left, mark the key deleted.
func (r *Keyring) deleting(ctx context.Context, k *Key) error {
	for _, g := range k.Generations {
		if g.State != StateDestroyed && g.State != StateCreating {
			return r.destroy(ctx, k.ID, g.Number, g.State)
		}
	}
	_, err := r.update(ctx, k.ID, func(k *Key, _ time.Time) error {
		if k.Deleted {
			return errUnchanged
		}
		k.Deleted = true
		return nil
	})
	return err
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
