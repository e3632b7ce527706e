package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
)

// Anchors is where the console keeps enrollments and passkeys: the
// keyring store's anchors.
type Anchors interface {
	CreateAnchor(ctx context.Context, name string, value []byte) error
	GetAnchor(ctx context.Context, name string) ([]byte, error)
	ListAnchors(ctx context.Context, prefix string) (map[string][]byte, error)
	UpdateAnchor(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) error
}

const (
	enrollPrefix = "console/enroll/" // by the SHA-256 of the token: the token itself is never stored
	credPrefix   = "console/cred/"   // by credential ID, base64url
	// DefaultEnrollTTL and MaxEnrollTTL bound an enrollment link's life.
	DefaultEnrollTTL = 15 * time.Minute
	MaxEnrollTTL     = 24 * time.Hour
)

// enrollment is a one-time token's promise: whoever shows it first
// registers a passkey for Identity.
type enrollment struct {
	Identity  string    `json:"identity"`
	Expires   time.Time `json:"expires"`
	Used      bool      `json:"used,omitempty"`
	Cancelled bool      `json:"cancelled,omitempty"`
}

// live reports whether the link can still register a passkey at now.
func (e enrollment) live(now time.Time) bool { return !e.Used && !e.Cancelled && now.Before(e.Expires) }

// errDeadLink is every refusal of a link that cannot register: it does
// not say which of unknown, used, expired or cancelled.
var errDeadLink = errs.New(errs.PermissionDenied, "this enrollment link is unknown, used, expired or cancelled: ask for another")

// Pending is an enrollment link that can still register a passkey.
type Pending struct {
	LinkID   string
	Identity string
	Expires  time.Time
}

// Passkey is a registered credential and the identity it signs in as.
type Passkey struct {
	Identity   string              `json:"identity"`
	Credential webauthn.Credential `json:"credential"`
	Created    time.Time           `json:"created"`
	Revoked    bool                `json:"revoked,omitempty"`
}

// ID is the passkey's credential ID, base64url.
func (p *Passkey) ID() string { return encodeID(p.Credential.ID) }

// encodeID is a credential ID as the store names it.
func encodeID(raw []byte) string { return base64.RawURLEncoding.EncodeToString(raw) }

// Store keeps enrollments and passkeys.
type Store struct{ A Anchors }

func tokenName(token string) string { return enrollPrefix + LinkID(token) }

// LinkID names an enrollment link without revealing it: the hex SHA-256
// of its token.
func LinkID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Enroll makes a one-time token for id, valid ttl.
func (s Store) Enroll(ctx context.Context, id string, ttl time.Duration, now time.Time) (string, time.Time, error) {
	who, err := identity.Parse(id)
	if err != nil || who.String() != id {
		return "", time.Time{}, errs.New(errs.InvalidArgument, "identity %q: a typed identity as the policy names it (spiffe://…, dns:NAME, cn:NAME)", id)
	}
	if ttl == 0 {
		ttl = DefaultEnrollTTL
	}
	if ttl < time.Minute || ttl > MaxEnrollTTL {
		return "", time.Time{}, errs.New(errs.InvalidArgument, "ttl %v: between 1m and %v", ttl, MaxEnrollTTL)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", time.Time{}, err
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	e := enrollment{Identity: id, Expires: now.Add(ttl)}
	v, _ := json.Marshal(e)
	if err := s.A.CreateAnchor(ctx, tokenName(token), v); err != nil {
		return "", time.Time{}, err
	}
	return token, e.Expires, nil
}

// redeem marks token used, once, and returns its identity: a token is
// good for one registration, decided in the update that spends it.
func (s Store) redeem(ctx context.Context, token string, now time.Time) (string, error) {
	var id string
	err := s.A.UpdateAnchor(ctx, tokenName(token), func(old []byte) ([]byte, error) {
		var e enrollment
		if old == nil || json.Unmarshal(old, &e) != nil || !e.live(now) {
			return nil, errDeadLink
		}
		e.Used, id = true, e.Identity
		return json.Marshal(e)
	})
	return id, err
}

// peek reads token's identity without spending it.
func (s Store) peek(ctx context.Context, token string, now time.Time) (string, error) {
	v, err := s.A.GetAnchor(ctx, tokenName(token))
	var e enrollment
	if err != nil || json.Unmarshal(v, &e) != nil || !e.live(now) {
		return "", errDeadLink
	}
	return e.Identity, nil
}

// PendingLinks lists the enrollment links that can still register a
// passkey at now, soonest to expire first.
func (s Store) PendingLinks(ctx context.Context, now time.Time) ([]Pending, error) {
	all, err := s.A.ListAnchors(ctx, enrollPrefix)
	if err != nil {
		return nil, err
	}
	var out []Pending
	for name, v := range all {
		var e enrollment
		if json.Unmarshal(v, &e) == nil && e.live(now) {
			out = append(out, Pending{LinkID: strings.TrimPrefix(name, enrollPrefix), Identity: e.Identity, Expires: e.Expires})
		}
	}
	slices.SortFunc(out, func(a, b Pending) int { return a.Expires.Compare(b.Expires) })
	return out, nil
}

// Cancel cancels the pending link linkID, decided in the update that
// cancels it: a link used meanwhile registered its passkey, which is
// what to revoke then.
func (s Store) Cancel(ctx context.Context, linkID string, now time.Time) error {
	if b, err := hex.DecodeString(linkID); err != nil || len(b) != sha256.Size {
		return errs.New(errs.InvalidArgument, "link_id: the 64 hex digits ListEnrollments gives")
	}
	return s.A.UpdateAnchor(ctx, enrollPrefix+linkID, func(old []byte) ([]byte, error) {
		var e enrollment
		switch {
		case old == nil || json.Unmarshal(old, &e) != nil:
			return nil, errs.New(errs.NotFound, "no enrollment link %s", linkID)
		case e.Used:
			return nil, errs.New(errs.FailedPrecondition, "enrollment link %s was used: its passkey is registered, or being registered this moment; list the enrollments and revoke it", linkID)
		case e.Cancelled || !now.Before(e.Expires):
			return nil, errs.New(errs.FailedPrecondition, "enrollment link %s is cancelled or expired already", linkID)
		}
		e.Cancelled = true
		return json.Marshal(e)
	})
}

// AddPasskey stores a registered credential.
func (s Store) AddPasskey(ctx context.Context, p *Passkey) error {
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return s.A.CreateAnchor(ctx, credPrefix+p.ID(), v)
}

// Passkey reads the credential of ID id (base64url).
func (s Store) Passkey(ctx context.Context, id string) (*Passkey, error) {
	v, err := s.A.GetAnchor(ctx, credPrefix+id)
	if err != nil {
		return nil, errs.New(errs.PermissionDenied, "unknown passkey")
	}
	var p Passkey
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Passkeys lists every registered credential.
func (s Store) Passkeys(ctx context.Context) ([]*Passkey, error) {
	all, err := s.A.ListAnchors(ctx, credPrefix)
	if err != nil {
		return nil, err
	}
	var out []*Passkey
	for _, v := range all {
		var p Passkey
		if json.Unmarshal(v, &p) == nil {
			out = append(out, &p)
		}
	}
	return out, nil
}

// Revoke revokes the credential of ID id.
func (s Store) Revoke(ctx context.Context, id string) error {
	id = strings.TrimSpace(id)
	return s.A.UpdateAnchor(ctx, credPrefix+id, func(old []byte) ([]byte, error) {
		var p Passkey
		if old == nil || json.Unmarshal(old, &p) != nil {
			return nil, errs.New(errs.NotFound, "no passkey %q", id)
		}
		p.Revoked = true
		return json.Marshal(p)
	})
}

// touch records a passkey's use: its signature counter, so a cloned
// authenticator shows (a counter that goes back).
func (s Store) touch(ctx context.Context, id string, cred *webauthn.Credential) error {
	return s.A.UpdateAnchor(ctx, credPrefix+id, func(old []byte) ([]byte, error) {
		var p Passkey
		if old == nil || json.Unmarshal(old, &p) != nil || p.Revoked {
			return nil, errs.New(errs.PermissionDenied, "this passkey is revoked")
		}
		p.Credential.Authenticator = cred.Authenticator
		return json.Marshal(p)
	})
}
