package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/relyingparty"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

func newDrill() *cobra.Command {
	cmd := &cobra.Command{Use: "drill", Short: "Exercise a live server"}
	c := addClientFlags(cmd)
	cmd.AddCommand(newDrillRotate(c))
	return cmd
}

// drill is one `drill rotate` run.
type drill struct {
	keys    sigilv1.KeyServiceClient
	jwt     sigilv1.JWTServiceClient
	rp      *relyingparty.Party
	keyID   string
	periods int

	mu                       sync.Mutex
	minted, verified, failed int
	firstFailure             error
}

func newDrillRotate(c *clientFlags) *cobra.Command {
	var (
		keyID, jwksURL string
		periods        int
		period         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rotate --key ID [--periods N] [--period DUR]",
		Short: "Rotate a JWT key N times while a relying party mints and verifies tokens, caching the JWKS as its headers allow",
		Long: `Rotates the key through N generations on the server's scheduler while tokens
are minted continuously and verified by a relying party that caches the
key's JWKS exactly as long as Cache-Control allows and never refetches
early. Prints "minted N verified N failed N" and exits non-zero on any
failure. --period sets an accelerated schedule (P = DUR, A = P/2, T = P/4,
S = P/20) for the run; the first rotation then waits until caches taken
under the old schedule have expired. Use a key meant for drills.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url, err := c.jwksURL(jwksURL, keyID)
			if err != nil {
				return err
			}
			return c.call(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				d := &drill{keys: sigilv1.NewKeyServiceClient(conn), jwt: sigilv1.NewJWTServiceClient(conn), keyID: keyID, periods: periods}
				if err := d.run(ctx, url, period); err != nil {
					return err
				}
				c.emit(cmd, map[string]int{"minted": d.minted, "verified": d.verified, "failed": d.failed},
					fmt.Sprintf("minted %d verified %d failed %d", d.minted, d.verified, d.failed))
				if d.failed > 0 {
					return fmt.Errorf("%d tokens failed verification; first: %v", d.failed, d.firstFailure)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyID, "key", "", "a jwt key ID")
	f.IntVar(&periods, "periods", 3, "rotations to go through")
	f.DurationVar(&period, "period", 0, "accelerated rotation period for the drill (the key's own schedule if unset)")
	f.StringVar(&jwksURL, "jwks-url", "", "the key's JWKS URL (derived from --data-dir if unset)")
	cmd.MarkFlagRequired("key")
	return cmd
}

// jwksURL is the key's own JWK Set document on the server's HTTP address.
func (c *clientFlags) jwksURL(explicit, keyID string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if c.dataDir == "" {
		return "", errors.New("drill needs --jwks-url, or --data-dir of a dev server")
	}
	dc, err := devmode.ReadClient(c.dataDir)
	if err != nil {
		return "", err
	}
	return "http://" + dc.HTTPAddr + "/keys/" + keyID + "/jwks.json", nil
}

func (d *drill) run(ctx context.Context, url string, period time.Duration) error {
	got, err := d.keys.GetKey(ctx, &sigilv1.GetKeyRequest{Id: d.keyID})
	if err != nil {
		return err
	}
	key := got.GetKey()
	if period > 0 {
		p := &sigilv1.JWTPolicy{RotateEvery: durationpb.New(period), PublishAhead: durationpb.New(period / 2),
			MaxTokenTtl: durationpb.New(period / 4), Skew: durationpb.New(period / 20)}
		resp, err := d.keys.UpdateKeyPolicy(ctx, &sigilv1.UpdateKeyPolicyRequest{Id: d.keyID, JwtPolicy: p})
		if err != nil {
			return err
		}
		key = resp.GetKey()
	}
	policy := key.GetJwtPolicy()
	if policy == nil {
		return fmt.Errorf("key %q is not a jwt key", d.keyID)
	}
	P, T, S := policy.GetRotateEvery().AsDuration(), policy.GetMaxTokenTtl().AsDuration(), policy.GetSkew().AsDuration()
	d.rp = relyingparty.New(httpFetch(ctx, url), time.Now, S)
	start := activeGeneration(key)
	// Long enough for the old schedule's caches to expire, then N periods.
	deadline := time.Now().Add(time.Duration(d.periods+1)*P + 10*time.Minute + S)
	var pending sync.WaitGroup
	tick := time.NewTicker(max(P/40, 20*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		gen, err := d.mint(ctx, T, &pending)
		if err != nil {
			return err
		}
		if gen >= start+d.periods || time.Now().After(deadline) {
			break
		}
	}
	pending.Wait()
	if cur := activeGeneration(currentKey(ctx, d.keys, d.keyID)); cur < start+d.periods {
		return fmt.Errorf("only %d of %d rotations happened before the deadline", cur-start, d.periods)
	}
	return nil
}

// mint signs one token and schedules its verification at a random moment
// before it expires. It returns the generation that signed.
func (d *drill) mint(ctx context.Context, maxTTL time.Duration, pending *sync.WaitGroup) (int, error) {
	ttl := time.Second + time.Duration(rand.Int64N(int64(max(maxTTL-time.Second, 1))))
	resp, err := d.jwt.SignJWT(ctx, &sigilv1.SignJWTRequest{KeyId: d.keyID, ClaimsJson: []byte(`{"sub":"sigil-drill"}`), Ttl: durationpb.New(ttl.Truncate(time.Second))})
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	d.minted++
	d.mu.Unlock()
	wait := time.Duration(rand.Int64N(int64(max(time.Until(resp.GetExpireTime().AsTime()), 1))))
	pending.Add(1)
	time.AfterFunc(wait, func() {
		defer pending.Done()
		d.verify(resp.GetToken())
	})
	return int(resp.GetGeneration()), nil
}

func (d *drill) verify(token string) {
	d.mu.Lock() // the party's cache is not for concurrent use
	defer d.mu.Unlock()
	if err := d.rp.Verify(token); err != nil {
		d.failed++
		if d.firstFailure == nil {
			d.firstFailure = err
		}
		return
	}
	d.verified++
}

func activeGeneration(k *sigilv1.Key) int {
	i := slices.IndexFunc(k.GetGenerations(), func(g *sigilv1.Generation) bool { return g.GetState() == "active" })
	if i < 0 {
		return 0
	}
	return int(k.GetGenerations()[i].GetGeneration())
}

// currentKey reads key id; nil if it cannot.
func currentKey(ctx context.Context, kc sigilv1.KeyServiceClient, id string) *sigilv1.Key {
	resp, err := kc.GetKey(ctx, &sigilv1.GetKeyRequest{Id: id})
	if err != nil {
		return nil
	}
	return resp.GetKey()
}

var maxAgeRE = regexp.MustCompile(`max-age=(\d+)`)

// httpFetch gets the JWK Set over HTTP and reads max-age from
// Cache-Control, as a relying party's HTTP cache would.
func httpFetch(ctx context.Context, url string) relyingparty.Fetch {
	return func() ([]byte, time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, 0, fmt.Errorf("GET %s: %s %v", url, resp.Status, err)
		}
		age := 0
		if m := maxAgeRE.FindStringSubmatch(resp.Header.Get("Cache-Control")); m != nil {
			age, _ = strconv.Atoi(m[1])
		}
		return body, time.Duration(age) * time.Second, nil
	}
}
