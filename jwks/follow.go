package jwks

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/jwt"
)

// Entries returns, for every JWT key of kr, its published generations
// (pending, active, retiring), the max-age its schedule allows and the
// JWK Sets it belongs to.
func Entries(ctx context.Context, kr *keyring.Keyring) []Entry {
	var out []Entry
	for _, k := range kr.List(ctx) {
		if k.Purpose != jwt.Name || k.Deleted {
			continue
		}
		e := Entry{ID: k.ID, MaxAge: jwt.PolicyOf(k).MaxAge(), Sets: jwt.SetsOf(k)}
		for _, g := range k.Generations {
			if g.Published() {
				e.Keys = append(e.Keys, JWK{KID: g.KID(), Algorithm: k.Algorithm, Public: g.Public()})
			}
		}
		out = append(out, e)
	}
	return out
}

// SetPoll is how often Follow looks for JWK Sets another replica made.
const SetPoll = 10 * time.Second

// Follow keeps p in step with kr and the JWK Sets in sets: it is rebuilt
// now, after every change to the keyring, and every SetPoll until ctx
// ends. A rebuild that fails is logged to log and the previous documents
// keep being served.
func Follow(ctx context.Context, kr *keyring.Keyring, sets jwt.Sets, p *Publisher, log *slog.Logger) error {
	var mu sync.Mutex // one rebuild at a time, each from the state as it then is
	update := func() error {
		mu.Lock()
		defer mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, rebuildTimeout)
		defer cancel()
		defs, err := sets.List(rctx)
		if defs == nil {
			return err
		}
		if err != nil {
			log.Error("JWK Sets left out of the JWKS: their records do not decode", "err", err)
		}
		return p.Update(Entries(rctx, kr), defs)
	}
	rebuild := func() {
		if err := update(); err != nil && ctx.Err() == nil {
			log.Error("rebuilding the JWKS failed; serving the previous one", "err", err)
		}
	}
	kr.Watch(rebuild)
	go func() {
		t := time.NewTicker(SetPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				rebuild()
			}
		}
	}()
	return update()
}

// rebuildTimeout bounds the store read of a rebuild.
const rebuildTimeout = 5 * time.Second
