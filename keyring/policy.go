package keyring

import (
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// JWTPolicy is the rotation schedule of a JWT key (DESIGN.md, Rotation).
type JWTPolicy struct {
	// RotateEvery (P): how long a generation signs.
	RotateEvery time.Duration `json:"rotate_every"`
	// PublishAhead (A): how long a generation is published before it signs.
	PublishAhead time.Duration `json:"publish_ahead"`
	// MaxTokenTTL (T): the latest exp a token may carry is now + T; it is
	// also the lifetime of a token that names no exp.
	MaxTokenTTL time.Duration `json:"max_token_ttl"`
	// Skew (S): the clock difference tolerated between Sigil and relying
	// parties.
	Skew time.Duration `json:"skew"`
}

// DefaultJWTPolicy is used for whatever a create request leaves unset.
var DefaultJWTPolicy = JWTPolicy{RotateEvery: 7 * 24 * time.Hour, PublishAhead: 24 * time.Hour, MaxTokenTTL: time.Hour, Skew: time.Minute}

// MaxCacheAge caps the JWKS max-age whatever the schedule allows, so a
// revocation reaches caching relying parties within it.
const MaxCacheAge = 10 * time.Minute

// MaxAge is the longest a relying party may cache this key's JWKS: at most
// A − S (invariant 2: a generation is in every honest cache before it
// signs), and at most MaxCacheAge. Whole seconds, as Cache-Control takes.
func (p JWTPolicy) MaxAge() time.Duration {
	return min(p.PublishAhead-p.Skew, MaxCacheAge).Truncate(time.Second)
}

// Validate refuses schedules that break the rotation invariants.
func (p JWTPolicy) Validate() error {
	switch {
	case p.RotateEvery < time.Second:
		return errs.New(errs.InvalidArgument, "rotate-every %v: must be at least 1s", p.RotateEvery)
	case p.Skew < 0:
		return errs.New(errs.InvalidArgument, "skew %v: must not be negative", p.Skew)
	case p.PublishAhead-p.Skew < time.Second:
		return errs.New(errs.InvalidArgument, "publish-ahead %v: must exceed skew %v by at least 1s, or no JWKS max-age keeps a new key ahead of its tokens", p.PublishAhead, p.Skew)
	case p.PublishAhead > p.RotateEvery:
		return errs.New(errs.InvalidArgument, "publish-ahead %v: must not exceed rotate-every %v", p.PublishAhead, p.RotateEvery)
	case p.MaxTokenTTL < time.Second || p.MaxTokenTTL > 30*24*time.Hour:
		return errs.New(errs.InvalidArgument, "max-token-ttl %v: must be between 1s and 720h", p.MaxTokenTTL)
	}
	return nil
}
