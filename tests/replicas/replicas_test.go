// Package replicas_test runs several Sigil replicas (their own etcd
// clients, keyrings, JWKS and schedulers) over one embedded etcd cluster
// and one SoftHSM token: keys, JWK Sets and spending limits are shared,
// and rotation survives the loss of the scheduling leader.
package replicas_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/relyingparty"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/jwks"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/etcdstore"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 4) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// replica is one Sigil replica: its own etcd client, keyring and JWKS.
type replica struct {
	name  string
	store *etcdstore.Store
	kr    *keyring.Keyring
	pub   *jwks.Publisher
	stop  context.CancelFunc
	eth   *eth.Signer
}

func newReplica(t *testing.T, name string, c *etcdtest.Cluster, hsm signer.Backend) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: c.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	// A scheduler stopped while its generation is being made leaves the
	// creating record for creating_grace (the HSM may still finish it);
	// a short grace lets the next leader roll it back within the
	// failover test's window, as the default 2 min would in production.
	kr, err := keyring.New(ctx, keyring.Options{Store: s, Backends: map[string]signer.Backend{"hsm": hsm}, DefaultBackend: "hsm", Logger: quiet, CreatingGrace: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pub := jwks.NewPublisher()
	jwks.Follow(ctx, kr, jwt.Sets{Anchors: s}, pub, slog.Default())
	go kr.Follow(ctx, s)
	r := &replica{name: name, store: s, kr: kr, pub: pub, stop: cancel, eth: &eth.Signer{Ledger: s, Now: time.Now, Log: quiet}}
	t.Cleanup(func() { cancel(); s.Close() })
	return r
}

func threeReplicas(t *testing.T) (*etcdtest.Cluster, []*replica) {
	c := etcdtest.Start(t, 3)
	hsm, err := pkcs11.Open(context.Background(), "hsm", pkcs11.Config(softhsmtest.Token(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hsm.Close() })
	var rs []*replica
	for i := range 3 {
		rs = append(rs, newReplica(t, fmt.Sprint("replica-", i), c, hsm))
	}
	return c, rs
}

// within polls cond until it holds or d passes.
func within(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func TestReplicasShareKeysJWKSAndLimits(t *testing.T) {
	c, rs := threeReplicas(t)
	ctx := context.Background()
	if _, err := rs[0].kr.Create(ctx, keyring.CreateSpec{ID: "auth", Purpose: jwt.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs[1:] {
		if !within(time.Second, func() bool { _, err := r.kr.Get(ctx, "auth"); return err == nil }) {
			t.Fatalf("%s does not see the key within a second", r.name)
		}
		sg, _ := r.kr.ForSigning(ctx, "auth", jwt.Name)
		if _, err := sg.Sign(ctx, make([]byte, 32)); err != nil {
			t.Fatalf("signing on %s: %v", r.name, err)
		}
	}
	// A rotation on one replica: every replica serves the same JWKS bytes.
	if _, err := rs[1].kr.Rotate(ctx, "auth", true); err != nil {
		t.Fatal(err)
	}
	same := func() bool {
		a := rs[0].pub.Default()
		for _, r := range rs[1:] {
			if d := r.pub.Default(); d.ETag != a.ETag || string(d.Body) != string(a.Body) {
				return false
			}
		}
		var set struct{ Keys []json.RawMessage }
		json.Unmarshal(a.Body, &set)
		return len(set.Keys) == 2
	}
	if !within(time.Second, same) {
		t.Fatal("the replicas' JWKS differ a second after a rotation")
	}

	// A JWK Set made through one replica, and a key joining it there: every
	// replica serves the set with the key.
	if _, err := (jwt.Sets{Anchors: rs[0].store}).Create(ctx, "issuer-b", false, []string{"auth-*"}, jwt.Creator{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := rs[0].kr.Create(ctx, keyring.CreateSpec{ID: "auth-b", Purpose: jwt.Name, Algorithm: signer.ES256,
		Policy: &jwt.Policy{Sets: []string{"issuer-b"}}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		served := func() bool {
			d, ok := r.pub.Set("issuer-b")
			var set struct{ Keys []json.RawMessage }
			return ok && json.Unmarshal(d.Body, &set) == nil && len(set.Keys) == 1
		}
		if !within(2*time.Second, served) {
			t.Fatalf("%s does not serve the set another replica made", r.name)
		}
	}

	// A daily limit holds across replicas: 60 concurrent requests spread
	// over three replicas, room for exactly n.
	const n = 9
	limit, _ := eth.ParseWei("limit", fmt.Sprint(n*100))
	if _, err := rs[2].kr.Create(ctx, keyring.CreateSpec{ID: "wallet", Purpose: eth.Name, Algorithm: signer.ES256K,
		Policy: &eth.Policy{ChainIDs: []uint64{1}, DailyLimit: limit}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if !within(time.Second, func() bool { _, err := r.kr.Get(ctx, "wallet"); return err == nil }) {
			t.Fatalf("%s does not see the wallet", r.name)
		}
	}
	tx := func(nonce int, to string) eth.Unsigned {
		u, _ := eth.ParseJSON([]byte(fmt.Sprintf(`{"chainId":"0x1","nonce":"0x%x","to":"%s","value":"0x64","gas":"0x5208","gasPrice":"0x1"}`, nonce, to)))
		return u
	}
	var ok, denied atomic.Int32
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			r := rs[i%3]
			sg, err := r.kr.ForSigning(ctx, "wallet", eth.Name)
			if err == nil {
				_, err = r.eth.SignTx(ctx, sg, tx(i, "0x3535353535353535353535353535353535353535"))
			}
			switch {
			case err == nil:
				ok.Add(1)
			case errs.Is(err, errs.PermissionDenied):
				denied.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != n || denied.Load() != 60-n {
		t.Fatalf("%d signed, %d denied across replicas; want exactly %d signed", ok.Load(), denied.Load(), n)
	}
	// One nonce, 30 different transactions spread over the replicas: one
	// is signed (the nonce guard shares the ledger's atomic update).
	if _, err := rs[0].kr.Create(ctx, keyring.CreateSpec{ID: "wallet-2", Purpose: eth.Name, Algorithm: signer.ES256K,
		Policy: &eth.Policy{ChainIDs: []uint64{1}}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		within(time.Second, func() bool { _, err := r.kr.Get(ctx, "wallet-2"); return err == nil })
	}
	var once atomic.Int32
	for i := range 30 {
		wg.Go(func() {
			r := rs[i%3]
			sg, err := r.kr.ForSigning(ctx, "wallet-2", eth.Name)
			if err == nil {
				_, err = r.eth.SignTx(ctx, sg, tx(5, fmt.Sprintf("0x%040x", 0x1000+i)))
			}
			switch {
			case err == nil:
				once.Add(1)
			case !errs.Is(err, errs.FailedPrecondition) && !errs.Is(err, errs.Aborted): // taken, or in progress
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if once.Load() != 1 {
		t.Fatalf("%d transactions signed for one nonce across replicas", once.Load())
	}

	// The etcd leader dies: signing goes on from memory at once, and
	// writes work again once etcd has a new leader.
	c.Kill(c.Leader())
	for _, r := range rs {
		sg, err := r.kr.ForSigning(ctx, "auth", jwt.Name)
		if err == nil {
			_, err = sg.Sign(ctx, make([]byte, 32))
		}
		if err != nil {
			t.Fatalf("%s cannot sign without the etcd leader: %v", r.name, err)
		}
	}
	if !within(10*time.Second, func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := rs[0].kr.Create(cctx, keyring.CreateSpec{ID: "after", Purpose: raw.Name, Algorithm: signer.ES256})
		return err == nil || errs.Is(err, errs.AlreadyExists)
	}) {
		t.Fatal("writes did not resume after the etcd leader was lost")
	}
	if !within(2*time.Second, func() bool { _, err := rs[2].kr.Get(ctx, "after"); return err == nil }) {
		t.Fatal("a replica did not catch up after the etcd leader was lost")
	}
}

// Three schedulers, one leader at a time; kill the leader in the middle
// of the rotations and another finishes them, while a relying party that
// caches the JWKS as its headers allow sees no failure.
func TestSchedulerFailover(t *testing.T) {
	_, rs := threeReplicas(t)
	ctx := context.Background()
	policy := jwt.Policy{Schedule: keyring.Schedule{RotateEvery: 3 * time.Second, PublishAhead: 1500 * time.Millisecond, MaxTokenTTL: time.Second, Skew: 250 * time.Millisecond}}
	if _, err := rs[0].kr.Create(ctx, keyring.CreateSpec{ID: "fast", Purpose: jwt.Name, Algorithm: signer.ES256, Policy: &policy}); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if !within(2*time.Second, func() bool { _, err := r.kr.Get(ctx, "fast"); return err == nil }) {
			t.Fatalf("%s does not see the key", r.name)
		}
	}
	schedCtx := make([]context.CancelFunc, 3)
	for i, r := range rs {
		sctx, cancel := context.WithCancel(ctx)
		schedCtx[i] = cancel
		go r.store.RunScheduler(sctx, r.kr, 100*time.Millisecond, r.name, quiet)
	}
	defer func() {
		for _, c := range schedCtx {
			c()
		}
	}()
	rp := relyingparty.New(func() ([]byte, time.Duration, error) { d := rs[2].pub.Default(); return d.Body, d.MaxAge, nil }, time.Now, policy.Skew)
	var minted, failed int
	var mu sync.Mutex
	var pending sync.WaitGroup
	mint := func() {
		sg, err := rs[1].kr.ForSigning(ctx, "fast", jwt.Name)
		if err != nil {
			t.Error(err)
			return
		}
		p, _ := jwt.Prepare(jwt.Request{Claims: []byte(`{"sub":"x"}`), TTL: time.Second}, policy, time.Now())
		tok, err := jwt.Sign(ctx, sg, p)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		minted++
		mu.Unlock()
		pending.Add(1)
		time.AfterFunc(time.Until(tok.Expiry)/2, func() {
			defer pending.Done()
			mu.Lock()
			defer mu.Unlock()
			if err := rp.Verify(tok.Compact); err != nil {
				failed++
				t.Logf("verification failed: %v", err)
			}
		})
	}
	// Rotations are counted by the highest generation number: destroyed
	// generations are pruned, so how many a key holds levels off.
	generations := func() int { k, _ := rs[0].store.Get(ctx, "fast"); return lastNumber(k) }
	// run mints and checks until done holds or max passes (a loaded CI
	// machine is slow; the assertions below say what must have happened).
	run := func(done func() bool, max time.Duration) {
		for end := time.Now().Add(max); time.Now().Before(end) && !done(); time.Sleep(50 * time.Millisecond) {
			mint()
			k, _ := rs[0].store.Get(ctx, "fast")
			active := 0
			for _, g := range k.Generations {
				if g.State == keyring.StateActive {
					active++
				}
			}
			if active != 1 {
				t.Fatalf("%d active generations", active)
			}
		}
	}
	start := generations()
	run(func() bool { return generations() >= start+1 }, 20*time.Second) // the scheduler rotates at least once
	leader, err := rs[0].store.LeaderName(ctx)
	if err != nil || leader == "" {
		t.Fatalf("no scheduler leader: %q %v", leader, err)
	}
	var i int
	fmt.Sscanf(leader, "replica-%d", &i)
	// Counts come from the store, as generations() reads them: a
	// replica's memory may lag the store.
	before, _ := rs[0].store.Get(ctx, "fast")
	schedCtx[i]() // the leader goes away in the middle of the rotations
	run(func() bool { return generations() >= lastNumber(before)+2 }, 30*time.Second)
	pending.Wait()
	after, _ := rs[0].store.Get(ctx, "fast")
	next, _ := rs[0].store.LeaderName(ctx)
	t.Logf("leader %s then %s; last generation %d then %d; minted %d, failed %d", leader, next, lastNumber(before), lastNumber(after), minted, failed)
	if next == leader || next == "" {
		t.Fatalf("no other replica took over the scheduler (%q)", next)
	}
	if lastNumber(after) < lastNumber(before)+2 {
		t.Fatalf("rotation stopped after the leader went away: generation %d then %d", lastNumber(before), lastNumber(after))
	}
	if failed != 0 || minted < 50 {
		t.Fatalf("minted %d, failed %d", minted, failed)
	}
}

// lastNumber is the highest generation number k has given.
func lastNumber(k *keyring.Key) int {
	n := k.LastGeneration
	for _, g := range k.Generations {
		n = max(n, g.Number)
	}
	return n
}
