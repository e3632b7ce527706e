package keyring_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 48) }

type env struct {
	hsm   *pkcs11.Backend
	token softhsmtest.Config
	store keyring.Store
	path  string
	now   time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	tok := softhsmtest.Token(t)
	hsm, err := pkcs11.Open(context.Background(), "hsm-a", pkcs11.Config(tok))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hsm.Close() })
	e := &env{hsm: hsm, token: tok, path: filepath.Join(t.TempDir(), "keyring.db"), now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	e.reopenStore(t)
	return e
}

func (e *env) reopenStore(t *testing.T) {
	t.Helper()
	if e.store != nil {
		e.store.Close()
	}
	s, err := boltstore.Open(e.path)
	if err != nil {
		t.Fatal(err)
	}
	e.store = s
	t.Cleanup(func() { s.Close() })
}

func (e *env) keyring(t *testing.T, store keyring.Store) *keyring.Keyring {
	t.Helper()
	if store == nil {
		store = e.store
	}
	r, err := keyring.New(context.Background(), keyring.Options{
		Store: store, Backends: map[string]signer.Backend{"hsm-a": e.hsm}, DefaultBackend: "hsm-a",
		Now: func() time.Time { return e.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wantKind(t *testing.T, err error, k errs.Kind) {
	t.Helper()
	if !errs.Is(err, k) {
		t.Fatalf("got %v (kind %v), want kind %v", err, errs.KindOf(err), k)
	}
}

func TestCreateGetListAndSurviveRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.keyring(t, nil)
	k, err := r.Create(ctx, keyring.CreateSpec{ID: "k1", Purpose: raw.Name, Algorithm: signer.ES256})
	if err != nil {
		t.Fatal(err)
	}
	g, ok := k.Active()
	if !ok || g.Number != 1 || g.Public() == nil || k.Backend != "hsm-a" {
		t.Fatalf("created key %+v", k)
	}
	if _, err := r.Create(ctx, keyring.CreateSpec{ID: "k2", Purpose: eth.Name, Algorithm: signer.ES256K}); err != nil {
		t.Fatal(err)
	}
	e.reopenStore(t)
	r2 := e.keyring(t, nil)
	list := r2.List(ctx)
	if len(list) != 2 || list[0].ID != "k1" || list[1].ID != "k2" {
		t.Fatalf("after restart: %v keys", len(list))
	}
	s, err := r2.ForSigning(ctx, "k1", raw.Name)
	if err != nil {
		t.Fatal(err)
	}
	digest := make([]byte, 32)
	sig, err := s.Backend.Sign(ctx, s.Generation.Ref, signer.ES256, digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.Verify(s.Generation.Public(), signer.ES256, digest, sig); err != nil {
		t.Fatal(err)
	}
}

func TestCreateRefusesBadSpecs(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	ctx := context.Background()
	for _, s := range []keyring.CreateSpec{
		{ID: "Upper", Purpose: raw.Name, Algorithm: signer.ES256},
		{ID: "", Purpose: raw.Name, Algorithm: signer.ES256},
		{ID: "-dash", Purpose: raw.Name, Algorithm: signer.ES256},
		{ID: "ok", Purpose: "mint", Algorithm: signer.ES256},
		{ID: "ok", Purpose: raw.Name, Algorithm: "HS256"},
		{ID: "ok", Purpose: eth.Name, Algorithm: signer.ES256},
		{ID: "ok", Purpose: raw.Name, Algorithm: signer.ES256, RSABits: 2048},
		{ID: "ok", Purpose: raw.Name, Algorithm: signer.RS256, RSABits: 4096},
		{ID: "ok", Purpose: raw.Name, Algorithm: signer.ES256, Backend: "nowhere"},
	} {
		_, err := r.Create(ctx, s)
		wantKind(t, err, errs.InvalidArgument)
	}
	if len(r.List(ctx)) != 0 {
		t.Fatal("a refused spec left a key")
	}
}

func TestPurposeAndExistence(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	ctx := context.Background()
	if _, err := r.Create(ctx, keyring.CreateSpec{ID: "auth-jwt", Purpose: jwt.Name, Algorithm: signer.EdDSA}); err != nil {
		t.Fatal(err)
	}
	_, err := r.Create(ctx, keyring.CreateSpec{ID: "auth-jwt", Purpose: jwt.Name, Algorithm: signer.EdDSA})
	wantKind(t, err, errs.AlreadyExists)
	_, err = r.ForSigning(ctx, "auth-jwt", raw.Name)
	wantKind(t, err, errs.FailedPrecondition)
	_, err = r.ForSigning(ctx, "nope", raw.Name)
	wantKind(t, err, errs.NotFound)
}

func TestConcurrentCreatesOfOneIDHaveOneWinner(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	var wins, exists atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { // eight intents (request IDs) for one ID
			_, err := r.Create(context.Background(), keyring.CreateSpec{ID: "race", Purpose: raw.Name, Algorithm: signer.ES256, RequestID: fmt.Sprint("req-", i)})
			switch {
			case err == nil:
				wins.Add(1)
			case errs.Is(err, errs.AlreadyExists):
				exists.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || exists.Load() != 7 {
		t.Fatalf("%d winners, %d AlreadyExists", wins.Load(), exists.Load())
	}
}

// failingStore fails the nth Put.
type failingStore struct {
	keyring.Store
	n, puts atomic.Int32
}

func (f *failingStore) Put(ctx context.Context, k *keyring.Key) (int64, error) {
	if f.puts.Add(1) == f.n.Load() {
		return 0, errs.New(errs.Unavailable, "injected store failure")
	}
	return f.Store.Put(ctx, k)
}

func TestFailedCreationLeavesNothingBehind(t *testing.T) {
	// Put 1 writes the key with generation 1 as creating (before the HSM
	// makes the pair), 2 completes it (after).
	for _, n := range []int32{1, 2} {
		t.Run(fmt.Sprintf("put %d fails", n), func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			fs := &failingStore{Store: e.store}
			fs.n.Store(n)
			r := e.keyring(t, fs)
			_, err := r.Create(ctx, keyring.CreateSpec{ID: "half", Purpose: raw.Name, Algorithm: signer.ES256})
			wantKind(t, err, errs.Unavailable)
			if _, err := e.store.Get(ctx, "half"); !errs.Is(err, errs.NotFound) {
				t.Fatalf("record left behind: %v", err)
			}
			if _, err := e.hsm.Public(ctx, e.hsm.NameRef("half.g1")); !errors.Is(err, signer.ErrKeyMissing) {
				t.Fatalf("key pair left in the token: %v", err)
			}
			if _, err := r.Get(ctx, "half"); !errs.Is(err, errs.NotFound) {
				t.Fatalf("visible in memory: %v", err)
			}
			if _, err := r.Create(ctx, keyring.CreateSpec{ID: "half", Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
				t.Fatalf("retry: %v", err)
			}
		})
	}
}

func TestCrashDuringCreationIsCleanedUpLater(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// What a crash between generation and completion leaves: a "creating"
	// record and a key pair in the token.
	if _, err := e.store.Put(ctx, &keyring.Key{ID: "crashed", Purpose: raw.Name, Algorithm: signer.ES256, Backend: "hsm-a",
		UpdatedAt: e.now, Generations: []keyring.Generation{{Number: 1, State: keyring.StateCreating, Name: "crashed.g1", Ref: e.hsm.NameRef("crashed.g1"), CreatedAt: e.now}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hsm.CreateKey(ctx, signer.CreateKeyRequest{Name: "crashed.g1", Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	r := e.keyring(t, nil)
	if _, err := r.Get(ctx, "crashed"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("a creating key is visible: %v", err)
	}
	// In progress (recent): a second create is refused, nothing is removed.
	_, err := r.Create(ctx, keyring.CreateSpec{ID: "crashed", Purpose: raw.Name, Algorithm: signer.ES256})
	wantKind(t, err, errs.AlreadyExists)
	// Abandoned (old): the retry removes the old key pair and succeeds.
	e.now = e.now.Add(time.Hour)
	k, err := r.Create(ctx, keyring.CreateSpec{ID: "crashed", Purpose: raw.Name, Algorithm: signer.ES256})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := k.Active()
	pub, err := e.hsm.Public(ctx, e.hsm.NameRef("crashed.g1")) // exactly one pair now, or this is ambiguous
	if err != nil {
		t.Fatal(err)
	}
	if !pub.(*ecdsa.PublicKey).Equal(g.Public()) {
		t.Fatal("the token holds another key pair than the keyring records")
	}
}

// lostAnswerStore commits the nth Put and then reports a failure, as a
// write whose answer is lost (an etcd leader change, a cancelled call).
type lostAnswerStore struct {
	keyring.Store
	n, puts atomic.Int32
}

func (l *lostAnswerStore) Put(ctx context.Context, k *keyring.Key) (int64, error) {
	rev, err := l.Store.Put(ctx, k)
	if err == nil && l.puts.Add(1) == l.n.Load() {
		return 0, errs.New(errs.Unavailable, "injected: answer lost after the commit")
	}
	return rev, err
}

// A creation whose completing write committed but whose answer was lost
// answers success (the store says so), and its key pair stays.
func TestLostAnswerNeverDestroysARecordedKeyPair(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ls := &lostAnswerStore{Store: e.store}
	ls.n.Store(2) // the write that completes generation 1
	r := e.keyring(t, ls)
	created, err := r.Create(ctx, keyring.CreateSpec{ID: "lost", Purpose: raw.Name, Algorithm: signer.ES256})
	if err != nil {
		t.Fatalf("a creation that succeeded answered %v", err)
	}
	if _, ok := created.Active(); !ok {
		t.Fatalf("answered generations: %+v", created.Generations)
	}
	k, err := e.store.Get(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := k.Active(); !ok {
		t.Fatalf("stored generations: %+v", k.Generations)
	} else if _, err := e.hsm.Public(ctx, g.Ref); err != nil {
		t.Fatalf("the store records generation 1 as active but its key pair is gone: %v", err)
	}
}

// Create with a request ID is safe to retry: the same request (ID and
// spec) returns the key that exists (a client whose answer was lost gets
// it); without the request ID, with another, or another spec, the ID is
// taken: AlreadyExists.
func TestCreateIsIdempotent(t *testing.T) {
	e := newEnv(t)
	r := e.keyring(t, nil)
	ctx := context.Background()
	spec := keyring.CreateSpec{ID: "again", Purpose: jwt.Name, Algorithm: signer.ES256, RequestID: "req-1"}
	first, err := r.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	k, err := r.Create(ctx, spec)
	if err != nil || len(k.Generations) != 1 || k.Generations[0].Ref != first.Generations[0].Ref {
		t.Fatalf("retry: %v %+v", err, k)
	}
	for _, other := range []keyring.CreateSpec{
		{ID: "again", Purpose: jwt.Name, Algorithm: signer.ES256},
		{ID: "again", Purpose: jwt.Name, Algorithm: signer.ES256, RequestID: "req-2"},
		{ID: "again", Purpose: jwt.Name, Algorithm: signer.ES384, RequestID: "req-1"},
		{ID: "again", Purpose: jwt.Name, Algorithm: signer.ES256, RequestID: "req-1", Policy: &jwt.Policy{Schedule: keyring.Schedule{MaxTokenTTL: 5 * time.Minute}}},
		{ID: "again", Purpose: raw.Name, Algorithm: signer.ES256, RequestID: "req-1"},
	} {
		_, err := r.Create(ctx, other)
		wantKind(t, err, errs.AlreadyExists)
	}
	_, err = r.Create(ctx, keyring.CreateSpec{ID: "bad-req", Purpose: raw.Name, Algorithm: signer.ES256, RequestID: "has space"})
	wantKind(t, err, errs.InvalidArgument)
}

// A creation whose first write committed but whose answer was lost goes
// on (the store holds its own record, by its random reference) instead of
// leaving the ID taken by a record nobody completes.
func TestLostAnswerOfTheFirstWrite(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ls := &lostAnswerStore{Store: e.store}
	ls.n.Store(1)
	r := e.keyring(t, ls)
	k, err := r.Create(ctx, keyring.CreateSpec{ID: "first", Purpose: raw.Name, Algorithm: signer.ES256, RequestID: "req-1"})
	if err != nil {
		t.Fatalf("a creation whose first write's answer was lost: %v", err)
	}
	if states(k) != "active" {
		t.Fatalf("generations: %s", states(k))
	}
}
