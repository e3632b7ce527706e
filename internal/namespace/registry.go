package namespace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Store keeps the namespace records beside the keys (the keyring store's
// anchors), so every replica sees the same.
type Store interface {
	CreateAnchor(ctx context.Context, name string, value []byte) error
	GetAnchor(ctx context.Context, name string) ([]byte, error)
	ListAnchors(ctx context.Context, prefix string) (map[string][]byte, error)
	UpdateAnchor(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) error
}

// Record is a namespace as stored.
type Record struct {
	Name      string            `json:"-"`
	Labels    map[string]string `json:"labels,omitempty"`
	Owner     string            `json:"owner,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	Frozen    bool              `json:"frozen,omitempty"`
	FrozenBy  string            `json:"frozen_by,omitempty"`
	FrozenAt  time.Time         `json:"frozen_at,omitzero"`
	CreatedBy string            `json:"created_by,omitempty"`
	Deleting  bool              `json:"deleting,omitempty"`
	// Incarnation tells a namespace from one deleted before it under the
	// same name (whose Generation may have been higher); Freezes counts
	// the freezes pulled, so an unfreeze names the one it lifts.
	Incarnation string `json:"incarnation,omitempty"`
	Freezes     uint64 `json:"freezes,omitempty"`
	Generation  int64  `json:"generation"` // counts changes, so a cached copy knows it is older
}

// prefix names the anchors of namespace records.
const prefix = "namespace/"

// MaxNamespaces bounds how many namespaces there are, MaxKeys how many
// keys one other than root holds (deleted ones included, until purged).
const (
	MaxNamespaces = 1024
	MaxKeys       = 4096
)

// Registry is the namespaces: read through a copy in memory that Refresh
// renews (replicas learn of others' changes within the refresh interval;
// this replica's own take effect at once).
type Registry struct {
	store Store
	mu    sync.RWMutex
	known map[string]Record
	// read is when the store was last listed (zero: never); a copy older
	// than StaleAfter may miss a freeze, so signing fails closed.
	read atomic.Int64
}

// StaleAfter is how old this replica's copy of the namespaces may grow
// (the store unreachable) before signatures in a namespace with a record
// are refused: a freeze pulled on another replica might be missed.
const StaleAfter = 10 * time.Second

// NewRegistry returns the registry kept in store; nil store keeps only
// root.
func NewRegistry(store Store) *Registry {
	return &Registry{store: store, known: map[string]Record{}}
}

func rootRecord() Record { return Record{Name: Root} }

// Get is namespace ns: NotFound if there is none. root always exists.
func (r *Registry) Get(ctx context.Context, ns string) (Record, error) {
	if ns == Root {
		if rec, ok := r.cached(ns); ok {
			return rec, nil
		}
		return rootRecord(), nil
	}
	if rec, ok := r.cached(ns); ok {
		return rec, nil
	}
	return r.load(ctx, ns)
}

func (r *Registry) cached(ns string) (Record, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rec, ok := r.known[ns]
	return rec, ok
}

// load reads ns from the store into memory.
func (r *Registry) load(ctx context.Context, ns string) (Record, error) {
	if r.store == nil {
		return Record{}, notFound(ns)
	}
	body, err := r.store.GetAnchor(ctx, prefix+ns)
	if errs.Is(err, errs.NotFound) {
		return Record{}, notFound(ns)
	}
	if err != nil {
		return Record{}, err
	}
	rec, err := decode(ns, body)
	if err != nil {
		return Record{}, err
	}
	r.keep(rec)
	return rec, nil
}

func notFound(ns string) error {
	return errs.New(errs.NotFound, "namespace %q does not exist", ns)
}

func decode(ns string, body []byte) (Record, error) {
	var rec Record
	if err := json.Unmarshal(body, &rec); err != nil {
		return Record{}, errs.New(errs.Internal, "namespace %q: stored record: %v", ns, err)
	}
	rec.Name = ns
	return rec, nil
}

// keep remembers rec unless memory holds a newer copy of the same
// incarnation.
func (r *Registry) keep(rec Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.known[rec.Name]; !ok || !newer(cur, rec) {
		r.known[rec.Name] = rec
	}
}

// newer reports whether a is a later copy of the namespace than b: the
// same incarnation, changed more often.
func newer(a, b Record) bool {
	return a.Incarnation == b.Incarnation && a.Generation > b.Generation
}

// List is every namespace, root first, then by name.
func (r *Registry) List(ctx context.Context) ([]Record, error) {
	if err := r.Refresh(ctx); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := []Record{rootRecord()}
	if rec, ok := r.known[Root]; ok {
		out[0] = rec
	}
	for _, name := range slices.Sorted(maps.Keys(r.known)) {
		if name != Root {
			out = append(out, r.known[name])
		}
	}
	return out, nil
}

// Refresh renews memory from the store: namespaces deleted elsewhere are
// forgotten (one made meanwhile is read again when asked for), changed
// ones replaced, but never by an older copy: a list read before this
// replica's own freeze must not undo it in memory.
func (r *Registry) Refresh(ctx context.Context) error {
	if r.store == nil {
		return nil
	}
	all, err := r.store.ListAnchors(ctx, prefix)
	if err != nil {
		return err
	}
	fresh := map[string]Record{}
	for name, body := range all {
		ns := strings.TrimPrefix(name, prefix)
		if rec, err := decode(ns, body); err == nil {
			fresh[ns] = rec
		}
	}
	r.mu.Lock()
	for name, rec := range fresh {
		if cur, ok := r.known[name]; ok && newer(cur, rec) {
			fresh[name] = cur
		}
	}
	r.known = fresh
	r.mu.Unlock()
	r.read.Store(time.Now().UnixNano())
	return nil
}

// Run refreshes memory every interval until ctx ends.
func (r *Registry) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Refresh(ctx) // a store outage keeps the last copy; the store guard reports it
		}
	}
}

// Create makes namespace rec.Name. root exists always.
func (r *Registry) Create(ctx context.Context, rec Record) (Record, error) {
	if err := Validate(rec.Name); err != nil {
		return Record{}, err
	}
	if rec.Name == Root {
		return Record{}, errs.New(errs.AlreadyExists, "namespace %q exists always", Root)
	}
	if r.store == nil {
		return Record{}, errs.New(errs.FailedPrecondition, "this keyring store keeps no namespaces")
	}
	all, err := r.store.ListAnchors(ctx, prefix)
	if err != nil {
		return Record{}, err
	}
	if len(all) >= MaxNamespaces {
		return Record{}, errs.New(errs.ResourceExhausted, "there are %d namespaces, the most there may be", MaxNamespaces)
	}
	rec.Generation, rec.Incarnation = 1, newIncarnation()
	body, _ := json.Marshal(rec)
	if err := r.store.CreateAnchor(ctx, prefix+rec.Name, body); err != nil {
		if errs.Is(err, errs.AlreadyExists) {
			return Record{}, errs.New(errs.AlreadyExists, "namespace %q exists", rec.Name)
		}
		return Record{}, err
	}
	r.keep(rec)
	return rec, nil
}

// Update applies fn to namespace ns inside one atomic update of its
// record (root's record is made on its first update): fn decides on the
// record as stored, never on a copy read before.
func (r *Registry) Update(ctx context.Context, ns string, fn func(rec *Record) error) (Record, error) {
	if r.store == nil {
		return Record{}, errs.New(errs.FailedPrecondition, "this keyring store keeps no namespaces")
	}
	var out Record
	err := r.store.UpdateAnchor(ctx, prefix+ns, func(old []byte) ([]byte, error) {
		rec := rootRecord()
		switch {
		case old != nil:
			var err error
			if rec, err = decode(ns, old); err != nil {
				return nil, err
			}
		case ns != Root:
			return nil, notFound(ns)
		}
		if err := fn(&rec); err != nil {
			return nil, err
		}
		rec.Generation++
		out = rec
		return json.Marshal(rec)
	})
	if err != nil {
		return Record{}, err
	}
	r.keep(out)
	return out, nil
}

// Delete removes namespace ns if empty finds it holds nothing. The
// namespace is first marked as being deleted (creations in it are then
// refused: see Usable), and only then checked, so a key cannot be made
// in it between the check and the deletion; if it is not empty the mark
// is lifted again.
func (r *Registry) Delete(ctx context.Context, ns string, empty func(ctx context.Context) error) error {
	if ns == Root {
		return errs.New(errs.FailedPrecondition, "namespace %q cannot be deleted", Root)
	}
	if _, err := r.Update(ctx, ns, func(rec *Record) error { rec.Deleting = true; return nil }); err != nil {
		return err
	}
	if err := empty(ctx); err != nil {
		if _, uerr := r.Update(context.WithoutCancel(ctx), ns, func(rec *Record) error { rec.Deleting = false; return nil }); uerr != nil {
			return errors.Join(err, uerr)
		}
		return err
	}
	err := r.store.UpdateAnchor(ctx, prefix+ns, func(old []byte) ([]byte, error) { return nil, nil })
	if err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.known, ns)
	r.mu.Unlock()
	return nil
}

// Usable answers nil if something may be made in namespace ns: it exists
// and is not being deleted.
func (r *Registry) Usable(ctx context.Context, ns string) error {
	rec, err := r.Get(ctx, ns)
	if err != nil {
		return err
	}
	if rec.Deleting {
		return errs.New(errs.FailedPrecondition, "namespace %q is being deleted", ns)
	}
	return nil
}

// Frozen refuses a signature with key id (qualified) if its namespace is
// frozen, as this replica last saw it (read from the store if it has not
// seen it at all, and refused if that fails); Sigil's own keys are never
// refused.
func (r *Registry) Frozen(ctx context.Context, id string) error {
	if strings.HasPrefix(id, reservedPrefix) {
		return nil
	}
	ns := Of(id)
	rec, err := r.Get(ctx, ns)
	if err != nil {
		return err
	}
	if _, stored := r.cached(ns); stored && r.store != nil && time.Since(time.Unix(0, r.read.Load())) > StaleAfter {
		return errs.New(errs.Unavailable, "namespace %q: the namespaces were not read from the store for over %v, so a freeze could go unseen", ns, StaleAfter)
	}
	if rec.Frozen {
		return errs.New(errs.FailedPrecondition, "namespace %q is frozen: it signs nothing until a quorum unfreezes it", ns)
	}
	return nil
}

// newIncarnation is a random name for a namespace's incarnation.
func newIncarnation() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
