package keyring

import (
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Schedule is a rotation schedule (DESIGN.md, Rotation): the policy of a
// purpose whose keys rotate by themselves (RotateScheduled), such as a
// JWT key's. Its JSON form is what key records store.
type Schedule struct {
	// RotateEvery (P): how long a generation signs.
	RotateEvery time.Duration `json:"rotate_every"`
	// PublishAhead (A): how long a generation is published before it signs.
	PublishAhead time.Duration `json:"publish_ahead"`
	// MaxTokenTTL (T): the longest a signature (a token) is accepted
	// after it is made; a generation stays published this long after it
	// stops signing.
	MaxTokenTTL time.Duration `json:"max_token_ttl"`
	// Skew (S): the clock difference tolerated between Sigil and relying
	// parties.
	Skew time.Duration `json:"skew"`
}

// RotationSchedule makes a Schedule (and any policy embedding one)
// Scheduled.
func (s Schedule) RotationSchedule() Schedule { return s }

// MaxCacheAge caps the JWKS max-age whatever the schedule allows, so a
// revocation reaches caching relying parties within it.
const MaxCacheAge = 10 * time.Minute

// MaxAge is the longest a relying party may cache the key's public keys:
// at most A − S (invariant 2: a generation is in every honest cache
// before it signs), and at most MaxCacheAge. Whole seconds, as
// Cache-Control takes.
func (s Schedule) MaxAge() time.Duration {
	return min(s.PublishAhead-s.Skew, MaxCacheAge).Truncate(time.Second)
}

// Bounds that keep every sum of schedule durations and times far from
// overflow.
const (
	MaxRotateEvery = 366 * 24 * time.Hour
	MaxSkew        = time.Hour
)

// Validate refuses schedules that break the rotation invariants.
func (s Schedule) Validate() error {
	switch {
	case s.RotateEvery < time.Second || s.RotateEvery > MaxRotateEvery:
		return errs.New(errs.InvalidArgument, "rotate-every %v: must be between 1s and %v", s.RotateEvery, MaxRotateEvery)
	case s.Skew < 0 || s.Skew > MaxSkew:
		return errs.New(errs.InvalidArgument, "skew %v: must be between 0 and %v", s.Skew, MaxSkew)
	case s.PublishAhead-s.Skew < time.Second:
		return errs.New(errs.InvalidArgument, "publish-ahead %v: must exceed skew %v by at least 1s, or no JWKS max-age keeps a new key ahead of its tokens", s.PublishAhead, s.Skew)
	case s.PublishAhead > s.RotateEvery:
		return errs.New(errs.InvalidArgument, "publish-ahead %v: must not exceed rotate-every %v", s.PublishAhead, s.RotateEvery)
	case s.MaxTokenTTL < time.Second || s.MaxTokenTTL > 30*24*time.Hour:
		return errs.New(errs.InvalidArgument, "max-token-ttl %v: must be between 1s and 720h", s.MaxTokenTTL)
	}
	return nil
}

// Overlay returns s with the set (non-zero) fields of p in place of its
// own: a request's partial schedule over a default or the current one.
func (s Schedule) Overlay(p Schedule) Schedule {
	for _, f := range []struct{ dst, src *time.Duration }{
		{&s.RotateEvery, &p.RotateEvery}, {&s.PublishAhead, &p.PublishAhead}, {&s.MaxTokenTTL, &p.MaxTokenTTL}, {&s.Skew, &p.Skew},
	} {
		if *f.src != 0 {
			*f.dst = *f.src
		}
	}
	return s
}
