package keyring_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
)

// refusingBackend makes the backend refuse to create keys while refuse
// is set, as a full or read-only token would.
type refusingBackend struct {
	signer.Backend
	refuse atomic.Bool
}

func (b *refusingBackend) CreateKey(ctx context.Context, req signer.CreateKeyRequest) (signer.KeyInfo, error) {
	if b.refuse.Load() {
		return signer.KeyInfo{}, errs.New(errs.Unavailable, "injected: the token refuses new keys")
	}
	return b.Backend.(signer.KeyManager).CreateKey(ctx, req)
}

func (b *refusingBackend) DestroyKey(ctx context.Context, ref string) error {
	return b.Backend.(signer.KeyManager).DestroyKey(ctx, ref)
}

func (b *refusingBackend) NewRef(name string, owner []byte) (string, error) {
	return b.Backend.(signer.KeyManager).NewRef(name, owner)
}

// repairLog collects the keyring's repairs.
type repairLog struct {
	mu   sync.Mutex
	seen []keyring.Repair
}

func (l *repairLog) add(r keyring.Repair) { l.mu.Lock(); l.seen = append(l.seen, r); l.mu.Unlock() }

func (l *repairLog) kinds() []keyring.RepairKind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []keyring.RepairKind
	for _, r := range l.seen {
		out = append(out, r.Kind)
	}
	return out
}

func (e *env) keyringWith(t *testing.T, o keyring.Options) *keyring.Keyring {
	t.Helper()
	if o.Store == nil {
		o.Store = e.store
	}
	if o.Backends == nil {
		o.Backends = map[string]signer.Backend{"hsm-a": e.hsm}
	}
	o.DefaultBackend, o.Now = "hsm-a", func() time.Time { return e.now }
	r, err := keyring.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Revoking the active generation of a JWT key makes its replacement
// first: when the replacement cannot be made, nothing changes and the
// caller gets the error; when it can, revocation and activation are one
// write.
func TestRevokingTheActiveGenerationNeedsItsReplacementFirst(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rb := &refusingBackend{Backend: e.hsm}
	r := e.keyringWith(t, keyring.Options{Backends: map[string]signer.Backend{"hsm-a": rb}})
	createJWT(t, r, "auth")
	rb.refuse.Store(true)
	_, err := r.Revoke(ctx, "auth", 1)
	wantKind(t, err, errs.Unavailable)
	k, _ := r.Get(ctx, "auth")
	if states(k) != "active" {
		t.Fatalf("a revoke whose replacement failed changed the key: %s", states(k))
	}
	if stored, _ := e.store.Get(ctx, "auth"); states(stored) != "active" {
		t.Fatalf("stored: %s", states(stored))
	}
	rb.refuse.Store(false)
	k, err = r.Revoke(ctx, "auth", 1)
	if err != nil || states(k) != "revoked,active" {
		t.Fatalf("revoke: %v %s", err, states(k))
	}
}

// A JWT key found without an active generation (here: a store written
// by hand, as a crash in an older version could leave it) gets one back
// from the scheduler, and the repair is reported.
func TestSchedulerRestoresAMissingActiveGeneration(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var repairs repairLog
	r := e.keyringWith(t, keyring.Options{OnRepair: repairs.add})
	createJWT(t, r, "orphaned")
	k, _ := e.store.Get(ctx, "orphaned")
	k.Generations[0].State, k.Generations[0].RevokedAt, k.Generations[0].DestroyAt = keyring.StateRevoked, e.now, e.now.Add(time.Hour)
	if _, err := e.store.Put(ctx, k); err != nil {
		t.Fatal(err)
	}
	r = e.keyringWith(t, keyring.Options{OnRepair: repairs.add})
	if err := r.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ = r.Get(ctx, "orphaned")
	if states(k) != "revoked,active" || !slices.Contains(repairs.kinds(), keyring.RepairActivate) {
		t.Fatalf("after a tick: %s, repairs %v", states(k), repairs.kinds())
	}
	if _, err := r.ForSigning(ctx, "orphaned", jwt.Name); err != nil {
		t.Fatal(err)
	}
}

// A creation a crash left unfinished: on a store no one else writes it
// is rolled back at start; on a shared one, by the running scheduler once
// the grace period has passed. Either way its objects go and the ID can
// be created again.
func TestUnfinishedCreationsAreRolledBack(t *testing.T) {
	for _, sole := range []bool{true, false} {
		t.Run(map[bool]string{true: "sole writer, at start", false: "shared store, while running"}[sole], func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			if _, err := e.store.Put(ctx, &keyring.Key{ID: "crashed", Purpose: raw.Name, Algorithm: signer.ES256, Backend: "hsm-a", CreatedAt: e.now,
				Generations: []keyring.Generation{{Number: 1, State: keyring.StateCreating, Name: "crashed.g1", Ref: e.hsm.NameRef("crashed.g1"), CreatedAt: e.now}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.store.Put(ctx, &keyring.Key{ID: "empty", Purpose: raw.Name, Algorithm: signer.ES256, Backend: "hsm-a", CreatedAt: e.now}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.hsm.CreateKey(ctx, signer.CreateKeyRequest{Name: "crashed.g1", Algorithm: signer.ES256}); err != nil {
				t.Fatal(err)
			}
			var repairs repairLog
			r := e.keyringWith(t, keyring.Options{SoleWriter: sole, CreatingGrace: time.Minute, OnRepair: repairs.add})
			if !sole {
				if err := r.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				if _, err := e.store.Get(ctx, "crashed"); err != nil {
					t.Fatal("rolled back within the grace period: another replica may be creating it")
				}
				e.now = e.now.Add(time.Minute)
				if err := r.Tick(ctx); err != nil {
					t.Fatal(err)
				}
			}
			for _, id := range []string{"crashed", "empty"} {
				if _, err := e.store.Get(ctx, id); !errs.Is(err, errs.NotFound) {
					t.Fatalf("record %q left: %v", id, err)
				}
			}
			if _, err := e.hsm.Public(ctx, e.hsm.NameRef("crashed.g1")); !errors.Is(err, signer.ErrKeyMissing) {
				t.Fatalf("objects left in the token: %v", err)
			}
			if !slices.Contains(repairs.kinds(), keyring.RepairRollback) {
				t.Fatalf("repairs: %v", repairs.kinds())
			}
			for _, id := range []string{"crashed", "empty"} {
				if _, err := r.Create(ctx, keyring.CreateSpec{ID: id, Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
					t.Fatalf("create %q again: %v", id, err)
				}
			}
		})
	}
}

// The sweep destroys Sigil's objects that no record names, only after
// the orphan grace, and never touches objects it did not make.
func TestSweepDestroysOrphansOnly(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var repairs repairLog
	r := e.keyringWith(t, keyring.Options{SweepInterval: time.Minute, OrphanGrace: 5 * time.Minute, OnRepair: repairs.add})
	kept, err := r.Create(ctx, keyring.CreateSpec{ID: "kept", Purpose: raw.Name, Algorithm: signer.ES256})
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := e.hsm.CreateKey(ctx, signer.CreateKeyRequest{Name: "lost.g1", Algorithm: signer.ES256, Owner: r.Owner()})
	if err != nil {
		t.Fatal(err)
	}
	// Another keyring's key sharing the token is never this one's orphan.
	theirs, err := e.hsm.CreateKey(ctx, signer.CreateKeyRequest{Name: "shared.g1", Algorithm: signer.ES256, Owner: []byte("othr")})
	if err != nil {
		t.Fatal(err)
	}
	foreign := foreignObjects(t, e)
	tick := func(d time.Duration) {
		t.Helper()
		e.now = e.now.Add(d)
		if err := r.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tick(0) // first sighting
	tick(time.Minute)
	if _, err := e.hsm.Public(ctx, orphan.Ref); err != nil {
		t.Fatalf("orphan destroyed within its grace: %v", err)
	}
	tick(5 * time.Minute)
	if _, err := e.hsm.Public(ctx, orphan.Ref); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("orphan still there after its grace: %v", err)
	}
	if !slices.Contains(repairs.kinds(), keyring.RepairOrphan) {
		t.Fatalf("repairs: %v", repairs.kinds())
	}
	g, _ := kept.Active()
	if _, err := e.hsm.Public(ctx, g.Ref); err != nil {
		t.Fatalf("a recorded key was swept: %v", err)
	}
	if _, err := e.hsm.Public(ctx, theirs.Ref); err != nil {
		t.Fatalf("another keyring's key was swept: %v", err)
	}
	if n := countObjects(t, e, foreign); n != len(foreign) {
		t.Fatalf("%d of %d foreign objects left", n, len(foreign))
	}
}

// foreignObjects puts objects Sigil did not make into the token: one
// with Sigil's label shape but another application's ID, one with no
// label. It returns their labels' templates for countObjects.
func foreignObjects(t *testing.T, e *env) [][]*p11.Attribute {
	t.Helper()
	ctx, h := softhsmtest.Session(t, e.token)
	templates := [][]*p11.Attribute{
		{p11.NewAttribute(p11.CKA_LABEL, "theirs.g1"), p11.NewAttribute(p11.CKA_ID, []byte("another-app"))},
		{p11.NewAttribute(p11.CKA_ID, []byte("unlabelled"))},
	}
	for _, tmpl := range templates {
		pub := append([]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_EC_PARAMS, []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})}, tmpl...)
		priv := append([]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_SIGN, true)}, tmpl...)
		if _, _, err := ctx.GenerateKeyPair(h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)}, pub, priv); err != nil {
			t.Fatal(err)
		}
	}
	return templates
}

func countObjects(t *testing.T, e *env, templates [][]*p11.Attribute) int {
	t.Helper()
	ctx, h := softhsmtest.Session(t, e.token)
	n := 0
	for _, tmpl := range templates {
		if err := ctx.FindObjectsInit(h, append([]*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY)}, tmpl...)); err != nil {
			t.Fatal(err)
		}
		objs, _, err := ctx.FindObjects(h, 10)
		ctx.FindObjectsFinal(h)
		if err != nil {
			t.Fatal(err)
		}
		n += len(objs)
	}
	return n
}

// A creation refused because another application's object already has
// the label Sigil wants, and the rollback of a crashed creation, destroy
// only what Sigil made: never the other application's objects.
func TestFailedCreationNeverDestroysForeignObjects(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.keyringWith(t, keyring.Options{})
	ctx11, h := softhsmtest.Session(t, e.token)
	victim := [][]*p11.Attribute{{p11.NewAttribute(p11.CKA_LABEL, "victim.g1"), p11.NewAttribute(p11.CKA_ID, []byte{1, 2})}}
	pub := append([]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_EC_PARAMS, []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})}, victim[0]...)
	priv := append([]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_SIGN, true)}, victim[0]...)
	if _, _, err := ctx11.GenerateKeyPair(h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)}, pub, priv); err != nil {
		t.Fatal(err)
	}
	_, err := r.Create(ctx, keyring.CreateSpec{ID: "victim", Purpose: raw.Name, Algorithm: signer.ES256})
	wantKind(t, err, errs.AlreadyExists)
	if n := countObjects(t, e, victim); n != 1 {
		t.Fatalf("the other application's key pair is gone (%d private keys left)", n)
	}
	// The same after a crash: a creating record whose name another
	// application's object carries, rolled back at start.
	if _, err := e.store.Put(ctx, &keyring.Key{ID: "victim", Purpose: raw.Name, Algorithm: signer.ES256, Backend: "hsm-a", CreatedAt: e.now,
		Generations: []keyring.Generation{{Number: 1, State: keyring.StateCreating, Name: "victim.g1", Ref: e.hsm.NameRef("victim.g1"), CreatedAt: e.now}}}); err != nil {
		t.Fatal(err)
	}
	e.keyringWith(t, keyring.Options{SoleWriter: true})
	if n := countObjects(t, e, victim); n != 1 {
		t.Fatalf("the rollback destroyed another application's key pair (%d left)", n)
	}
}

// Disabling is recorded (it survives a restart), refuses signing, and is
// refused for the audit key, which is Sigil's.
func TestDisabledKeysRefuseToSign(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.keyringWith(t, keyring.Options{})
	if _, err := r.Create(ctx, keyring.CreateSpec{ID: "off", Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetDisabled(ctx, "off", true); err != nil {
		t.Fatal(err)
	}
	r = e.keyringWith(t, keyring.Options{}) // restart
	_, err := r.ForSigning(ctx, "off", raw.Name)
	wantKind(t, err, errs.FailedPrecondition)
	if _, err := r.SetDisabled(ctx, "off", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ForSigning(ctx, "off", raw.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := r.EnsureAuditKey(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = r.SetDisabled(ctx, keyring.AuditKeyID, true)
	wantKind(t, err, errs.FailedPrecondition)
	// Nor does a client change its policy, revoke or rotate it.
	_, err = r.SetPolicy(ctx, keyring.AuditKeyID, keyring.PurposeAudit, nil)
	wantKind(t, err, errs.FailedPrecondition)
	_, err = r.SetPolicy(ctx, keyring.AuditKeyID, jwt.Name, &jwt.Policy{Schedule: keyring.Schedule{}})
	wantKind(t, err, errs.FailedPrecondition)
	_, err = r.Revoke(ctx, keyring.AuditKeyID, 1)
	wantKind(t, err, errs.FailedPrecondition)
	_, err = r.Rotate(ctx, keyring.AuditKeyID, true)
	wantKind(t, err, errs.FailedPrecondition)
}
