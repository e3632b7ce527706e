package keyring_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

// flakyDestroyer fails DestroyKey while down is set: the backend going
// away in the middle of a deletion.
type flakyDestroyer struct {
	*pkcs11.Backend
	down atomic.Bool
}

func (f *flakyDestroyer) DestroyKey(ctx context.Context, ref string) error {
	if f.down.Load() {
		return errs.New(errs.Unavailable, "injected: token unreachable")
	}
	return f.Backend.DestroyKey(ctx, ref)
}

// A scheduled deletion refuses signatures and changes at once, can be
// cancelled within its window, and after it destroys every generation's
// objects, surviving the backend failing half-way; the ID stays taken.
func TestScheduledDeletion(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	fd := &flakyDestroyer{Backend: e.hsm}
	r, err := keyring.New(ctx, keyring.Options{Store: e.store, Backends: map[string]signer.Backend{"hsm-a": fd}, DefaultBackend: "hsm-a",
		Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, keyring.CreateSpec{ID: "doomed", Purpose: jwt.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	k, err := r.Rotate(ctx, "doomed", true) // two generations with objects
	if err != nil {
		t.Fatal(err)
	}
	refs := []string{k.Generations[0].Ref, k.Generations[1].Ref}

	for _, w := range []time.Duration{0, 6 * 24 * time.Hour, 31 * 24 * time.Hour} {
		_, err := r.ScheduleDeletion(ctx, "doomed", w)
		wantKind(t, err, errs.InvalidArgument)
	}
	k, err = r.ScheduleDeletion(ctx, "doomed", 7*24*time.Hour)
	if err != nil || !k.DeleteAt.Equal(e.now.Add(7*24*time.Hour)) {
		t.Fatalf("schedule: %v %v", k.DeleteAt, err)
	}
	_, err = r.ForSigning(ctx, "doomed", jwt.Name)
	wantKind(t, err, errs.FailedPrecondition)
	for name, change := range map[string]func() error{
		"rotate":     func() error { _, err := r.Rotate(ctx, "doomed", true); return err },
		"disable":    func() error { _, err := r.SetDisabled(ctx, "doomed", true); return err },
		"policy":     func() error { _, err := r.SetPolicy(ctx, "doomed", jwt.Name, &jwt.Policy{}); return err },
		"reschedule": func() error { _, err := r.ScheduleDeletion(ctx, "doomed", 8*24*time.Hour); return err },
		"create again": func() error {
			_, err := r.Create(ctx, keyring.CreateSpec{ID: "doomed", Purpose: raw.Name, Algorithm: signer.ES256})
			return err
		},
	} {
		if err := change(); !errs.Is(err, errs.FailedPrecondition) && !errs.Is(err, errs.AlreadyExists) {
			t.Errorf("%s while pending deletion: %v", name, err)
		}
	}

	// Cancelled: it signs again. Scheduled again, and the window passes.
	if _, err := r.CancelDeletion(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ForSigning(ctx, "doomed", jwt.Name); err != nil {
		t.Fatalf("after cancel: %v", err)
	}
	if _, err := r.ScheduleDeletion(ctx, "doomed", 7*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(7*24*time.Hour + time.Second)
	_, err = r.CancelDeletion(ctx, "doomed")
	wantKind(t, err, errs.FailedPrecondition)

	// The backend goes away half-way: the deletion waits, nothing is
	// marked deleted that still has objects, and it finishes on return.
	fd.down.Store(true)
	if err := r.Tick(ctx); err == nil {
		t.Fatal("a deletion with the backend down reported no error")
	}
	if k, _ := r.Get(ctx, "doomed"); k.Deleted {
		t.Fatal("marked deleted while its objects could not be destroyed")
	}
	fd.down.Store(false)
	e.wantDeleted(t, r, "doomed", refs)
	_, err = r.Create(ctx, keyring.CreateSpec{ID: "doomed", Purpose: raw.Name, Algorithm: signer.ES256})
	wantKind(t, err, errs.AlreadyExists)
	_, err = r.ForSigning(ctx, "doomed", jwt.Name)
	wantKind(t, err, errs.FailedPrecondition)
	_, err = r.Revoke(ctx, "doomed", 2)
	wantKind(t, err, errs.FailedPrecondition)
}

// Labels, owner and description: checked, changed, matched.
func TestInventory(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.keyring(t, nil)
	k, err := r.Create(ctx, keyring.CreateSpec{ID: "tagged", Purpose: raw.Name, Algorithm: signer.ES256,
		Labels: map[string]string{"team": "payments", "env": "prod"}, Owner: "payments-oncall", Description: "signs settlement files"})
	if err != nil || k.Labels["team"] != "payments" || k.Owner != "payments-oncall" {
		t.Fatalf("create: %+v %v", k, err)
	}
	for name, spec := range map[string]keyring.CreateSpec{
		"bad label key":        {Labels: map[string]string{"Team": "x"}},
		"label value too long": {Labels: map[string]string{"team": string(make([]byte, 64))}},
		"label value control":  {Labels: map[string]string{"team": "a\nb"}},
		"owner not printable":  {Owner: "a\x00b"},
		"description control":  {Description: "a\x1bb"},
		"description too long": {Description: string(make([]byte, 1025))},
	} {
		spec.ID, spec.Purpose, spec.Algorithm = "bad", raw.Name, signer.ES256
		_, err := r.Create(ctx, spec)
		if !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	owner := "treasury"
	k, err = r.SetMetadata(ctx, "tagged", keyring.Metadata{SetLabels: map[string]string{"env": "staging", "tier": "1"}, RemoveLabels: []string{"team"}, Owner: &owner})
	if err != nil || k.Labels["env"] != "staging" || k.Labels["team"] != "" || k.Owner != "treasury" || k.Description != "signs settlement files" {
		t.Fatalf("metadata: %+v %v", k, err)
	}
	if !k.HasLabels([]string{"env=staging", "tier"}) || k.HasLabels([]string{"env=prod"}) || k.HasLabels([]string{"team"}) {
		t.Errorf("HasLabels on %v", k.Labels)
	}
	many := map[string]string{}
	for i := range 33 {
		many[string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	_, err = r.SetMetadata(ctx, "tagged", keyring.Metadata{SetLabels: many})
	wantKind(t, err, errs.InvalidArgument)
	_, err = r.SetMetadata(ctx, keyring.AuditKeyID, keyring.Metadata{Owner: &owner})
	wantKind(t, err, errs.NotFound) // no audit key in this keyring
}

// Two replicas over one store, their clocks either side of the deletion
// time, the second not yet told of the cancellation: a cancellation that
// succeeded is never followed by a destruction.
func TestACancelledDeletionIsNeverCarriedOut(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var aNow, bNow time.Time
	replica := func(now *time.Time) *keyring.Keyring {
		r, err := keyring.New(ctx, keyring.Options{Store: e.store, Backends: map[string]signer.Backend{"hsm-a": e.hsm}, DefaultBackend: "hsm-a",
			Now: func() time.Time { return *now }})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	aNow, bNow = e.now, e.now
	a := replica(&aNow)
	if _, err := a.Create(ctx, keyring.CreateSpec{ID: "wallet", Purpose: eth.Name, Algorithm: signer.ES256K}); err != nil {
		t.Fatal(err)
	}
	k, err := a.ScheduleDeletion(ctx, "wallet", keyring.MinDeletionWindow)
	if err != nil {
		t.Fatal(err)
	}
	b := replica(&bNow) // it knows of the deletion
	aNow, bNow = k.DeleteAt.Add(-time.Second), k.DeleteAt.Add(time.Second)
	if _, err := a.CancelDeletion(ctx, "wallet"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		b.Tick(ctx) // b's memory still has the deletion due
	}
	stored, err := e.store.Get(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	g := stored.Generations[0]
	if stored.Deleted || stored.DeletionStarted || g.State != keyring.StateActive {
		t.Fatalf("after a cancellation: deleted %v, started %v, generation %s", stored.Deleted, stored.DeletionStarted, g.State)
	}
	if _, err := e.hsm.Public(ctx, g.Ref); err != nil {
		t.Fatalf("the key pair of a key whose deletion was cancelled: %v", err)
	}
}

// A deletion scheduled while a generation is being created: the creation
// does not complete on the key (its pair is rolled back), and when the
// window has passed nothing of the key is left in the backend.
func TestADeletionScheduledDuringACreation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sb := &slowBackend{Backend: e.hsm}
	r, err := keyring.New(ctx, keyring.Options{Store: e.store, Backends: map[string]signer.Backend{"hsm-a": sb}, DefaultBackend: "hsm-a",
		Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, keyring.CreateSpec{ID: "busy", Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	sb.hook = func() { // inside the rotation's CreateKey
		if _, err := r.ScheduleDeletion(ctx, "busy", keyring.MinDeletionWindow); err != nil {
			t.Error(err)
		}
	}
	if _, err := r.Rotate(ctx, "busy", true); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("a rotation that raced a deletion: %v", err)
	}
	k, _ := r.Get(ctx, "busy")
	if len(k.Generations) != 1 {
		t.Fatalf("a generation was added to a key pending deletion: %s", states(k))
	}
	e.now = e.now.Add(keyring.MinDeletionWindow + time.Second)
	for range 4 {
		r.Tick(ctx)
	}
	if k, _ = r.Get(ctx, "busy"); !k.Deleted {
		t.Fatalf("not deleted: %s", states(k))
	}
	objects, err := e.hsm.ListKeys(ctx, r.Owner())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objects {
		if strings.HasPrefix(o.Name, "busy.") {
			t.Errorf("%s outlived the deletion", o.Name)
		}
	}
}

// diesAfterDestroy forgets the objects and then fails, as a process
// killed between the backend's destroy and the record of it would leave
// them (the destroy.after-backend failpoint).
type diesAfterDestroy struct{ *pkcs11.Backend }

func (d diesAfterDestroy) DestroyKey(ctx context.Context, ref string) error {
	if err := d.Backend.DestroyKey(ctx, ref); err != nil {
		return err
	}
	return errs.New(errs.Unavailable, "injected: died after the backend destroyed %s", ref)
}

// A deletion interrupted at each of its steps (its keyring abandoned, a
// new one opened over the same store, as a kill -9 and a restart leave
// it) is carried to its end: once started it cannot be cancelled, an
// object destroyed but not recorded so is destroyed again harmlessly, and
// every object goes.
func TestDeletionResumesAfterARestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	withBackend := func(b signer.Backend) *keyring.Keyring {
		r, err := keyring.New(ctx, keyring.Options{Store: e.store, Backends: map[string]signer.Backend{"hsm-a": b}, DefaultBackend: "hsm-a",
			Now: func() time.Time { return e.now }})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := e.keyring(t, nil)
	if _, err := r.Create(ctx, keyring.CreateSpec{ID: "doomed", Purpose: jwt.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	k, err := r.Rotate(ctx, "doomed", true)
	if err != nil {
		t.Fatal(err)
	}
	refs := []string{k.Generations[0].Ref, k.Generations[1].Ref}
	if _, err := r.ScheduleDeletion(ctx, "doomed", keyring.MinDeletionWindow); err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(keyring.MinDeletionWindow + time.Second)

	// Interrupted after the start mark, before any destroy.
	down := &flakyDestroyer{Backend: e.hsm}
	down.down.Store(true)
	if err := withBackend(down).Tick(ctx); err == nil {
		t.Fatal("no error with the backend down")
	}
	if k, _ := e.store.Get(ctx, "doomed"); !k.DeletionStarted || k.Deleted {
		t.Fatalf("after the first step: started %v, deleted %v", k.DeletionStarted, k.Deleted)
	}
	_, err = e.keyring(t, nil).CancelDeletion(ctx, "doomed")
	wantKind(t, err, errs.FailedPrecondition)

	// Interrupted after the backend forgot generation 1, before the record.
	if err := withBackend(diesAfterDestroy{e.hsm}).Tick(ctx); err == nil {
		t.Fatal("the injected death reported no error")
	}
	if _, err := e.hsm.Public(ctx, refs[0]); !errors.Is(err, signer.ErrKeyMissing) {
		t.Fatalf("generation 1's objects: %v", err)
	}
	if k, _ := e.store.Get(ctx, "doomed"); k.Generations[0].State == keyring.StateDestroyed {
		t.Fatal("the injected death came after the record, not before")
	}

	// The next process finishes it.
	e.wantDeleted(t, e.keyring(t, nil), "doomed", refs)
}

// wantDeleted runs r's scheduler a few times and checks that key id was
// deleted: marked so, every generation destroyed, its objects (refs)
// gone from the token.
func (e *env) wantDeleted(t *testing.T, r *keyring.Keyring, id string, refs []string) {
	t.Helper()
	ctx := context.Background()
	for range 4 {
		r.Tick(ctx)
	}
	k, err := r.Get(ctx, id)
	if err != nil || !k.Deleted {
		t.Fatalf("%s: deleted %v, %v", id, k.Deleted, err)
	}
	for _, g := range k.Generations {
		if g.State != keyring.StateDestroyed || g.Published() {
			t.Errorf("generation %d is %s after the deletion", g.Number, g.State)
		}
	}
	for _, ref := range refs {
		if _, err := e.hsm.Public(ctx, ref); !errors.Is(err, signer.ErrKeyMissing) {
			t.Errorf("object %s still in the token: %v", ref, err)
		}
	}
}
