package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
)

// DefaultSet is the JWK Set every jwt key but ES256K ones joins unless
// it names others, served at /.well-known/jwks.json. It exists without
// being created and never takes ES256K keys, so it stays acceptable to
// relying-party libraries that refuse a whole set holding one.
const DefaultSet = "default"

// Set is a named JWK Set: an issuer's keys, served at /jwks/{name}.json.
type Set struct {
	Name string `json:"-"`
	// AllowES256K lets secp256k1 keys join (RFC 8812). Many libraries
	// (jose 6, go-jose, jwx without a build tag) reject the whole set
	// when one member is secp256k1, so a set takes them only by choice.
	AllowES256K bool `json:"allow_es256k"`
	// KeyPatterns are the key IDs that may join (* and ? globs): an
	// admin of one issuer's keys cannot publish one in another's set.
	KeyPatterns []string  `json:"key_patterns"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	// CreatedBy is the identity whose rule allowed the creation; Scoped,
	// that the rule did not cover every key (such creators are limited).
	CreatedBy string `json:"created_by,omitempty"`
	Scoped    bool   `json:"scoped,omitempty"`
}

// Creator is who creates a set, for the limits.
type Creator struct {
	Identity string
	Scoped   bool // its rule does not cover every key
}

// Admits reports whether key id (qualified) may be in the set: it lives
// in the set's namespace (a glob's character class could match "/") and
// matches one of its patterns.
func (s Set) Admits(id string) bool {
	if namespace.Of(id) != namespace.Of(s.Name) {
		return false
	}
	for _, p := range s.KeyPatterns {
		if ok, _ := path.Match(p, id); ok {
			return true
		}
	}
	return false
}

// MaxSets bounds how many sets a namespace has, MaxSetsTotal all of them
// together: each is a document rebuilt on every change to the keyring.
// Scoped creators (whose rule does not cover every key of the namespace)
// may make MaxSetsPerCreator each and MaxScopedSets together, so they
// cannot take the slots an admin of the namespace needs. One namespace's
// sets take nothing from another's below MaxSetsTotal.
const (
	MaxSets           = 256
	MaxSetsPerCreator = 16
	MaxScopedSets     = MaxSets - 32
	MaxSetsTotal      = 4096
)

// DefaultSetIn is the name of namespace ns's default set (qualified).
func DefaultSetIn(ns string) string { return namespace.Qualify(ns, DefaultSet) }

// IsDefault reports whether set name (qualified) is its namespace's
// default set.
func IsDefault(name string) bool { return namespace.Local(name) == DefaultSet }

// defaultSetOf is the default set of the namespace of set name: it takes
// every jwt key of the namespace but ES256K ones.
func defaultSetOf(name string) Set {
	ns := namespace.Of(name)
	return Set{Name: DefaultSetIn(ns), KeyPatterns: []string{namespace.Qualify(ns, "*")}}
}

// EffectivePatterns are the key patterns a set made with patterns admits:
// NAME-* if none are given. Names and patterns are qualified (see package
// namespace).
func EffectivePatterns(name string, patterns []string) []string {
	if len(patterns) == 0 {
		return []string{name + "-*"}
	}
	return patterns
}

// Sets are the JWK Sets, kept beside the keys in the keyring's store
// (anchors named "jwks-set/NAME") so every replica sees the same.
type Sets struct{ Anchors keyring.Anchors }

const setPrefix = "jwks-set/"

var setName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// checkSetNames refuses names (qualified) a set cannot have.
func checkSetNames(names []string) error {
	if len(names) > 16 {
		return errs.New(errs.InvalidArgument, "jwks-sets: at most 16")
	}
	for _, n := range names {
		ns, local := namespace.Split(n)
		if !setName.MatchString(local) || namespace.Validate(ns) != nil || strings.HasPrefix(local, "sigil.") {
			return errs.New(errs.InvalidArgument, "jwks-set %q: must match [a-z0-9][a-z0-9._-]{0,63} and not start with \"sigil.\"", local)
		}
	}
	return nil
}

// checkPatterns refuses key patterns (qualified, in namespace ns) a set
// cannot admit by.
func checkPatterns(ns string, patterns []string) error {
	if len(patterns) == 0 || len(patterns) > 16 {
		return errs.New(errs.InvalidArgument, "key patterns: 1 to 16")
	}
	for _, p := range patterns {
		got, local := namespace.Split(p)
		if _, err := path.Match(p, ""); err != nil || local == "" || len(local) > 64 || got != ns {
			return errs.New(errs.InvalidArgument, "key pattern %q: a key ID glob of at most 64 bytes", local)
		}
	}
	return nil
}

// Create makes set name, which keys matching patterns may join (NAME-*
// if none are given).
func (s Sets) Create(ctx context.Context, name string, allowES256K bool, patterns []string, by Creator, now time.Time) (Set, error) {
	if err := checkSetNames([]string{name}); err != nil {
		return Set{}, err
	}
	patterns = EffectivePatterns(name, patterns)
	if err := checkPatterns(namespace.Of(name), patterns); err != nil {
		return Set{}, err
	}
	if IsDefault(name) {
		return Set{}, errs.New(errs.AlreadyExists, "JWK Set %q exists always and takes no ES256K keys", DefaultSet)
	}
	if s.Anchors == nil {
		return Set{}, errs.New(errs.FailedPrecondition, "this keyring store keeps no JWK Sets")
	}
	if err := s.withinLimits(ctx, namespace.Of(name), by, 1); err != nil {
		return Set{}, err
	}
	set := Set{Name: name, AllowES256K: allowES256K, KeyPatterns: patterns, CreatedAt: now.UTC(), CreatedBy: by.Identity, Scoped: by.Scoped}
	body, _ := json.Marshal(set)
	if err := s.Anchors.CreateAnchor(ctx, setPrefix+name, body); err != nil {
		return Set{}, err
	}
	// Checked again with the new set in the store: of creations racing
	// past the first check, those over a limit take theirs back (no limit
	// is ever exceeded for good; a racer may be refused spuriously). The
	// check and the take-back do not depend on the caller's deadline: one
	// that expired during the write must not leave the set over a limit.
	after, cancel := context.WithTimeout(context.WithoutCancel(ctx), limitCheckTimeout)
	defer cancel()
	if err := s.withinLimits(after, namespace.Of(name), by, 0); err != nil {
		if derr := s.Anchors.UpdateAnchor(after, setPrefix+name, func([]byte) ([]byte, error) { return nil, nil }); derr != nil {
			return Set{}, errors.Join(err, derr)
		}
		return Set{}, err
	}
	return set, nil
}

// limitCheckTimeout bounds the check after a set's creation.
const limitCheckTimeout = 10 * time.Second

// withinLimits checks that the sets in the store, with more to come in
// namespace ns, stay within MaxSetsTotal, MaxSets in ns and, for a scoped
// creator, its own limits there.
func (s Sets) withinLimits(ctx context.Context, ns string, by Creator, more int) error {
	all, err := s.Anchors.ListAnchors(ctx, setPrefix)
	if err != nil {
		return err
	}
	if len(all)+more > MaxSetsTotal {
		return errs.New(errs.ResourceExhausted, "there are %d JWK Sets, the most there may be", len(all))
	}
	here, mine, scoped := 0, 0, 0
	for name, body := range all {
		var set Set
		if namespace.Of(strings.TrimPrefix(name, setPrefix)) != ns || json.Unmarshal(body, &set) != nil {
			continue
		}
		here++
		if set.Scoped {
			scoped++
			if set.CreatedBy == by.Identity {
				mine++
			}
		}
	}
	switch {
	case here+more > MaxSets:
		return errs.New(errs.ResourceExhausted, "namespace %q has %d JWK Sets, the most it may have", ns, here)
	case by.Scoped && mine+more > MaxSetsPerCreator:
		return errs.New(errs.ResourceExhausted, "%s made %d JWK Sets, the most an admin of some keys may make", by.Identity, mine)
	case by.Scoped && scoped+more > MaxScopedSets:
		return errs.New(errs.ResourceExhausted, "admins of some keys made %d JWK Sets, the most they may make together", scoped)
	}
	return nil
}

// Get returns set name (qualified).
func (s Sets) Get(ctx context.Context, name string) (Set, error) {
	if IsDefault(name) {
		return defaultSetOf(name), nil
	}
	if s.Anchors == nil {
		return Set{}, errs.New(errs.FailedPrecondition, "JWK Set %q: this keyring store keeps no sets but %q", namespace.Local(name), DefaultSet)
	}
	body, err := s.Anchors.GetAnchor(ctx, setPrefix+name)
	if errs.Is(err, errs.NotFound) {
		return Set{}, errs.New(errs.FailedPrecondition, "JWK Set %q does not exist (create it with `sigil jwks-set create`)", namespace.Local(name))
	}
	if err != nil {
		return Set{}, err
	}
	return decodeSet(name, body)
}

// List returns every set of every namespace, root's DefaultSet first,
// then by name (the other namespaces' default sets are not stored: see
// DefaultSetIn). A stored set that does not decode is left out and named
// in the error, beside the sets that do: one bad record must not stop
// every set from being served.
func (s Sets) List(ctx context.Context) ([]Set, error) {
	out := []Set{defaultSetOf(DefaultSet)}
	if s.Anchors == nil {
		return out, nil
	}
	stored, err := s.Anchors.ListAnchors(ctx, setPrefix)
	if err != nil {
		return nil, err
	}
	var bad []error
	for name, body := range stored {
		set, err := decodeSet(strings.TrimPrefix(name, setPrefix), body)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		out = append(out, set)
	}
	sort.Slice(out[1:], func(i, j int) bool { return out[1+i].Name < out[1+j].Name })
	return out, errors.Join(bad...)
}

// ListIn returns the sets of namespace ns, its default set first.
func (s Sets) ListIn(ctx context.Context, ns string) ([]Set, error) {
	all, err := s.List(ctx)
	if all == nil {
		return nil, err
	}
	out := []Set{defaultSetOf(DefaultSetIn(ns))}
	for _, set := range all {
		if namespace.Of(set.Name) == ns && !IsDefault(set.Name) {
			out = append(out, set)
		}
	}
	return out, err
}

// Update replaces set name's key patterns, deciding inside the set's
// atomic update: check answers whether the caller may (given the patterns
// it had), and members lists the keys in the set, each of which the new
// patterns must still admit.
func (s Sets) Update(ctx context.Context, name string, patterns []string, check func(old []string) error, members func() []string) (Set, error) {
	if err := checkPatterns(namespace.Of(name), patterns); err != nil {
		return Set{}, err
	}
	return s.change(ctx, name, func(set *Set) (bool, error) {
		if err := check(set.KeyPatterns); err != nil {
			return false, err
		}
		set.KeyPatterns = slices.Clone(patterns)
		for _, id := range members() {
			if !set.Admits(id) {
				return false, errs.New(errs.FailedPrecondition, "key %q is in JWK Set %q and the new patterns do not admit it; take it out of the set first", namespace.Local(id), namespace.Local(name))
			}
		}
		return true, nil
	})
}

// Delete deletes set name if members finds no key in it, decided inside
// the set's atomic update.
func (s Sets) Delete(ctx context.Context, name string, check func(patterns []string) error, members func() []string) error {
	_, err := s.change(ctx, name, func(set *Set) (bool, error) {
		if err := check(set.KeyPatterns); err != nil {
			return false, err
		}
		if ids := members(); len(ids) > 0 {
			return false, errs.New(errs.FailedPrecondition, "JWK Set %q holds %d key(s) (%s first); take them out first", namespace.Local(name), len(ids), namespace.Local(ids[0]))
		}
		return false, nil
	})
	return err
}

// change applies fn to stored set name inside its atomic update, so fn
// decides on the set as it is, never on a copy read before; the set is
// kept as fn leaves it, or deleted if fn says not to keep it.
func (s Sets) change(ctx context.Context, name string, fn func(set *Set) (keep bool, err error)) (Set, error) {
	if IsDefault(name) {
		return Set{}, errs.New(errs.FailedPrecondition, "JWK Set %q takes every key of its namespace; it cannot be changed or deleted", DefaultSet)
	}
	if s.Anchors == nil {
		return Set{}, errs.New(errs.FailedPrecondition, "this keyring store keeps no JWK Sets")
	}
	var out Set
	err := s.Anchors.UpdateAnchor(ctx, setPrefix+name, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, errs.New(errs.NotFound, "JWK Set %q does not exist", namespace.Local(name))
		}
		set, err := decodeSet(name, old)
		if err != nil {
			return nil, err
		}
		keep, err := fn(&set)
		if err != nil || !keep {
			return nil, err
		}
		out = set
		return json.Marshal(set)
	})
	return out, err
}

func decodeSet(name string, body []byte) (Set, error) {
	var set Set
	if err := json.Unmarshal(body, &set); err != nil {
		return Set{}, errs.New(errs.Internal, "JWK Set %q: %w", name, err)
	}
	set.Name = name
	return set, nil
}
