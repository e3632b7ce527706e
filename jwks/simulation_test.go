package jwks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/sigil-hsm/sigil/internal/relyingparty"
	"github.com/sigil-hsm/sigil/internal/testutil/keyringtest"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/jwks"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/signer"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 4) }

// clock is the simulation's fake time.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

type minted struct {
	token     string
	kid       string
	presentAt time.Time
	rp        int
}

func TestRotationSimulationNoRelyingPartyTripsOver(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	policy := jwt.Policy{Schedule: keyring.Schedule{RotateEvery: time.Hour, PublishAhead: 20 * time.Minute, MaxTokenTTL: 15 * time.Minute, Skew: time.Minute}}
	env := keyringtest.HSM(t, keyringtest.Options{Now: clk.now, Retention: 2 * time.Hour})
	kr, hsm := env.Keyring, env.HSM
	pub := jwks.NewPublisher()
	if err := jwks.Follow(ctx, kr, jwt.Sets{}, pub, slog.Default()); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Create(ctx, keyring.CreateSpec{ID: "auth", Purpose: jwt.Name, Algorithm: signer.ES256, Policy: &policy}); err != nil {
		t.Fatal(err)
	}

	rnd := rand.New(rand.NewPCG(1, 2))
	// Relying parties with clocks off by up to S either way.
	fetch := func() ([]byte, time.Duration, error) { d := pub.Default(); return d.Body, d.MaxAge, nil }
	rps := make([]*relyingparty.Party, 6)
	for i := range rps {
		skew := time.Duration(rnd.Int64N(int64(2*policy.Skew))) - policy.Skew
		rps[i] = relyingparty.New(fetch, func() time.Time { return clk.t.Add(skew) }, policy.Skew)
	}
	const step = 30 * time.Second
	const periods = 24
	start := clk.t
	var queue []minted
	revokedAt := map[string]time.Time{}
	var mintedN, verified, failed, revokedAccepted, revokedRejected int
	maxAge := policy.MaxAge()

	for clk.t.Before(start.Add(periods * policy.RotateEvery)) {
		if err := kr.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		k, err := kr.Get(ctx, "auth")
		if err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, k, pub, policy, clk.t)

		// Emergencies: revoke a retiring generation in period 5, and the
		// active one in period 12 once its successor has been published
		// long enough to be in every cache.
		elapsed := clk.t.Sub(start)
		if r := k.Generations; elapsed > 5*time.Hour && len(revokedAt) == 0 {
			for _, g := range r {
				if g.State == keyring.StateRetiring {
					revoke(t, kr, k, g.Number, revokedAt, clk.t)
					break
				}
			}
		}
		if elapsed > 12*time.Hour && len(revokedAt) == 1 {
			for _, g := range k.Generations {
				if g.State == keyring.StatePending && !clk.t.Before(g.PublishedAt.Add(maxAge+policy.Skew)) {
					a, _ := k.Active()
					revoke(t, kr, k, a.Number, revokedAt, clk.t)
					break
				}
			}
		}

		// Mint one token, to be shown to some party at a random time
		// before it expires.
		s, err := kr.ForSigning(ctx, "auth", jwt.Name)
		if err != nil {
			t.Fatal(err)
		}
		if _, bad := revokedAt[s.Generation.KID()]; bad {
			t.Fatalf("a revoked generation signs at %v", clk.t)
		}
		ttl := time.Duration(1+rnd.Int64N(int64(policy.MaxTokenTTL/time.Second))) * time.Second
		p, err := jwt.Prepare(jwt.Request{Claims: []byte(`{"sub":"user-1"}`), TTL: ttl}, policy, clk.t)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Sign(ctx, s, p)
		if err != nil {
			t.Fatal(err)
		}
		mintedN++
		// Presented on the first step at or after presentAt, so keep a
		// step's margin before exp.
		present := clk.t.Add(time.Duration(rnd.Int64N(max(1, int64(tok.Expiry.Sub(clk.t)-step)))))
		queue = append(queue, minted{tok.Compact, tok.KID, present, rnd.IntN(len(rps))})

		// Present what is due.
		slices.SortFunc(queue, func(a, b minted) int { return a.presentAt.Compare(b.presentAt) })
		for len(queue) > 0 && !queue[0].presentAt.After(clk.t) {
			m := queue[0]
			queue = queue[1:]
			err := rps[m.rp].Verify(m.token)
			revoked, isRevoked := revokedAt[m.kid]
			switch {
			case isRevoked && err == nil && clk.t.After(revoked.Add(maxAge)):
				revokedAccepted++
			case isRevoked && err != nil:
				revokedRejected++
			case err != nil:
				failed++
				t.Errorf("at %v party %d rejected a token of %s: %v", clk.t.Sub(start), m.rp, m.kid, err)
			default:
				verified++
			}
		}
		clk.t = clk.t.Add(step)
	}
	k, _ := kr.Get(ctx, "auth")
	given := 0 // generations made; the record keeps only the newest destroyed ones
	for _, g := range k.Generations {
		given = max(given, g.Number)
	}
	t.Logf("%d periods, %d generations: minted %d, verified %d, failed %d, revoked-and-rejected %d, revoked-but-accepted %d",
		periods, given, mintedN, verified, failed, revokedRejected, revokedAccepted)
	if failed != 0 || revokedAccepted != 0 {
		t.Fatalf("failed %d, revoked tokens accepted after the cache window %d", failed, revokedAccepted)
	}
	if given < periods || verified < mintedN/2 || len(revokedAt) != 2 || revokedRejected == 0 {
		t.Fatalf("the simulation did not exercise what it should: %d generations, %d verified of %d, %d revocations, %d revoked rejections",
			given, verified, mintedN, len(revokedAt), revokedRejected)
	}
	destroyed := 0
	for n := 1; n <= given; n++ {
		g, kept := generation(k, n)
		if kept && g.State != keyring.StateDestroyed {
			continue
		}
		destroyed++
		if _, err := hsm.Public(ctx, hsm.NameRef(fmt.Sprintf("auth.g%d", n))); err == nil {
			t.Errorf("generation %d is destroyed but its objects are still in the token", n)
		}
	}
	if destroyed < periods-4 {
		t.Fatalf("only %d generations destroyed after their retention", destroyed)
	}
}

func generation(k *keyring.Key, n int) (keyring.Generation, bool) {
	for _, g := range k.Generations {
		if g.Number == n {
			return g, true
		}
	}
	return keyring.Generation{}, false
}

func revoke(t *testing.T, kr *keyring.Keyring, k *keyring.Key, n int, revokedAt map[string]time.Time, now time.Time) {
	t.Helper()
	for _, g := range k.Generations {
		if g.Number == n {
			revokedAt[g.KID()] = now
		}
	}
	if _, err := kr.Revoke(context.Background(), k.ID, n); err != nil {
		t.Fatal(err)
	}
}

// checkInvariants checks DESIGN.md's three rotation invariants on k and
// the JWKS being served.
func checkInvariants(t *testing.T, k *keyring.Key, p *jwks.Publisher, policy jwt.Policy, now time.Time) {
	t.Helper()
	active := 0
	var doc jose.JSONWebKeySet
	json.Unmarshal(p.Default().Body, &doc)
	for _, g := range k.Generations {
		if g.State == keyring.StateActive {
			active++
			ahead := policy.PublishAhead
			if replacedRevoked(k, g) { // activated early, but only once every cache had it
				ahead = policy.MaxAge() + policy.Skew
			}
			if g.Number > 1 && g.ActivatedAt.Sub(g.PublishedAt) < ahead {
				t.Fatalf("generation %d signed %v after it was published (want ≥ %v)", g.Number, g.ActivatedAt.Sub(g.PublishedAt), ahead)
			}
		}
		inDoc := len(doc.Key(g.KID())) == 1
		if g.Published() != inDoc {
			t.Fatalf("generation %d (%s) in the JWKS: %v", g.Number, g.State, inDoc)
		}
		if g.State == keyring.StateRetiring && now.Sub(g.RetiringAt) > policy.MaxTokenTTL+policy.Skew+30*time.Second {
			t.Fatalf("generation %d still retiring %v after it stopped signing", g.Number, now.Sub(g.RetiringAt))
		}
		if !g.RetiredAt.IsZero() && g.RetiredAt.Sub(g.RetiringAt) < policy.MaxTokenTTL+policy.Skew {
			t.Fatalf("generation %d unpublished %v after it stopped signing (T + S = %v)", g.Number, g.RetiredAt.Sub(g.RetiringAt), policy.MaxTokenTTL+policy.Skew)
		}
	}
	if active != 1 {
		t.Fatalf("%d active generations at %v", active, now)
	}
	if p.Default().MaxAge > policy.PublishAhead-policy.Skew {
		t.Fatalf("max-age %v exceeds A − S", p.Default().MaxAge)
	}
}

// replacedRevoked reports whether g became active because the active
// generation was revoked at that instant.
func replacedRevoked(k *keyring.Key, g keyring.Generation) bool {
	for _, r := range k.Generations {
		if !r.RevokedAt.IsZero() && r.RevokedAt.Equal(g.ActivatedAt) {
			return true
		}
	}
	return false
}
