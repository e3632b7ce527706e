package jwks

import (
	"context"
	"log/slog"

	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/jwt"
)

// Entries returns, for every JWT key of kr, its published generations
// (pending, active, retiring) and the max-age its schedule allows.
func Entries(ctx context.Context, kr *keyring.Keyring) []Entry {
	var out []Entry
	for _, k := range kr.List(ctx) {
		if k.Purpose != jwt.Name {
			continue
		}
		e := Entry{ID: k.ID, MaxAge: jwt.PolicyOf(k).MaxAge()}
		for _, g := range k.Generations {
			if g.Published() {
				e.Keys = append(e.Keys, JWK{KID: g.KID(), Algorithm: k.Algorithm, Public: g.Public()})
			}
		}
		out = append(out, e)
	}
	return out
}

// Follow keeps p in step with kr: it is rebuilt now and after every
// change to the keyring. A rebuild that fails is logged to log and the
// previous documents keep being served.
func Follow(ctx context.Context, kr *keyring.Keyring, p *Publisher, log *slog.Logger) error {
	update := func() error { return p.Update(Entries(ctx, kr)) }
	kr.Watch(func() {
		if err := update(); err != nil {
			log.Error("rebuilding the JWKS failed; serving the previous one", "err", err)
		}
	})
	return update()
}
