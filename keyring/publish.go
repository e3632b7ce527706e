package keyring

import (
	"context"

	"github.com/sigil-hsm/sigil/jwks"
)

// JWKSEntries returns, for every JWT key, its published generations
// (pending, active, retiring) and the max-age its schedule allows.
func (r *Keyring) JWKSEntries(ctx context.Context) []jwks.Entry {
	var out []jwks.Entry
	for _, k := range r.List(ctx) {
		if k.Purpose != PurposeJWT || k.JWT == nil {
			continue
		}
		e := jwks.Entry{ID: k.ID, MaxAge: k.JWT.MaxAge()}
		for _, g := range k.Generations {
			if g.Published() {
				e.Keys = append(e.Keys, jwks.JWK{KID: g.KID(), Algorithm: k.Algorithm, Public: g.Public()})
			}
		}
		out = append(out, e)
	}
	return out
}

// Publish keeps p in step with the keyring: it is rebuilt now and after
// every change.
func (r *Keyring) Publish(ctx context.Context, p *jwks.Publisher) error {
	update := func() error { return p.Update(r.JWKSEntries(ctx)) }
	r.Watch(func() {
		if err := update(); err != nil {
			r.log.Error("rebuilding the JWKS failed; serving the previous one", "err", err)
		}
	})
	return update()
}
