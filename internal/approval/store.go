package approval

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
)

// Bounds on what held requests can make the store keep. A client allowed
// an operation an approval rule holds can hold requests, but no more
// than PerRequester at once, none larger than MaxPayload, those of a
// namespace other than root at most PerNamespace (so one tenant cannot
// take what another needs), and all of them together at most MaxRecords;
// requests that ended are kept Retention (for their result and for
// inspection), then pruned, and count until then.
const (
	MaxPayload   = 64 << 10
	PerRequester = 16
	PerNamespace = 512
	MaxRecords   = 4096
	Retention    = 24 * time.Hour
)

// Where records and payloads are kept, by request ID.
const (
	prefix        = "approvals/"
	payloadPrefix = "approval-payloads/"
)

// Store keeps held requests in the keyring store's anchors.
type Store struct {
	a Anchors
	// holding (one token) makes a replica's holds one at a time: each
	// decides its retry and its bounds on the records as they stand and
	// writes its own before the next reads them, so identical requests
	// held at once make one request and racing ones cannot pass a bound.
	// A hold waits for it only while its context allows. Other
	// replicas' holds are not in it (see docs/dual-control.md).
	holding chan struct{}
}

// Anchors is what the store keeps requests in: small named values with
// atomic updates (the keyring store's anchors satisfy it).
type Anchors interface {
	CreateAnchor(ctx context.Context, name string, value []byte) error
	GetAnchor(ctx context.Context, name string) ([]byte, error)
	ListAnchors(ctx context.Context, prefix string) (map[string][]byte, error)
	UpdateAnchor(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) error
}

// NewStore keeps requests in a.
func NewStore(a Anchors) *Store { return &Store{a: a, holding: make(chan struct{}, 1)} }

// holdTimeout bounds a hold's turn, whatever its caller's deadline: the
// replica's other holds wait for it.
const holdTimeout = 10 * time.Second

// Hold records r, or if the same requester already holds a live request
// for the same method and payload, returns that one instead (a client's
// retry is not a second request). Requests that ended past Retention are
// pruned first, before the hold waits for its turn.
func (s *Store) Hold(ctx context.Context, r *Request, now time.Time) (*Request, error) {
	if len(r.Payload) > MaxPayload {
		return nil, errs.New(errs.InvalidArgument, "request: %d bytes, more than the %d a request held for approval may carry", len(r.Payload), MaxPayload)
	}
	if _, err := s.Sweep(ctx, now); err != nil {
		return nil, err
	}
	select {
	case s.holding <- struct{}{}:
		defer func() { <-s.holding }()
	case <-ctx.Done():
		return nil, errs.FromContext(ctx, "waiting for the requests held before it")
	}
	ctx, cancel := context.WithTimeout(ctx, holdTimeout)
	defer cancel()
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	all = slices.DeleteFunc(all, func(o *Request) bool { return o.ended(now) })
	mine, here := 0, 0
	for _, o := range all {
		if o.InNamespace() == r.InNamespace() {
			here++
		}
		if o.Requester != r.Requester || !o.Live(now) {
			continue
		}
		if o.Method == r.Method && o.PayloadSHA256 == r.PayloadSHA256 && o.KeyID == r.KeyID {
			switch _, err := s.Payload(ctx, o.ID); {
			case err == nil:
				return o, nil
			case !errs.Is(err, errs.FailedPrecondition): // the store failed: no second request on a guess
				return nil, err
			} // its payload is not kept: it can never run (an earlier release's half-held request), not the one to answer
		}
		mine++
	}
	switch {
	case mine >= PerRequester:
		return nil, errs.New(errs.ResourceExhausted, "approvals: %s holds %d requests awaiting approval already", r.Requester, mine)
	case r.InNamespace() != namespace.Root && here >= PerNamespace:
		return nil, errs.New(errs.ResourceExhausted, "approvals: namespace %s holds %d requests already", r.InNamespace(), here)
	case len(all) >= MaxRecords:
		return nil, errs.New(errs.ResourceExhausted, "approvals: %d requests are held already", len(all))
	}
	if err := s.create(ctx, r); err != nil {
		return nil, err
	}
	return r, nil
}

// create writes r's payload, then its record: a request is never seen
// without the bytes it would run. A payload whose record could not be
// written is deleted, however the hold's context ended; one a crash
// left is never read (nothing names it).
func (s *Store) create(ctx context.Context, r *Request) error {
	r.Outbox.Raise(EventHeld)
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := s.a.CreateAnchor(ctx, payloadPrefix+r.ID, r.Payload); err != nil {
		return err
	}
	if err := s.a.CreateAnchor(ctx, prefix+r.ID, b); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), holdTimeout)
		defer cancel()
		s.DropPayload(cctx, r.ID)
		return err
	}
	return nil
}

// Payload returns the protobuf bytes of the request with id; an error
// if they are gone (the request ended) or were never written.
func (s *Store) Payload(ctx context.Context, id string) ([]byte, error) {
	b, err := s.a.GetAnchor(ctx, payloadPrefix+id)
	if errs.Is(err, errs.NotFound) {
		return nil, errs.New(errs.FailedPrecondition, "approval %s: its request's bytes are not kept", id)
	}
	return b, err
}

// DropPayload deletes the payload of a request that ended.
func (s *Store) DropPayload(ctx context.Context, id string) error {
	return s.a.UpdateAnchor(ctx, payloadPrefix+id, func([]byte) ([]byte, error) { return nil, nil })
}

// Sweep prunes the requests that ended more than Retention ago and
// returns the others.
func (s *Store) Sweep(ctx context.Context, now time.Time) ([]*Request, error) {
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	return s.prune(ctx, all, now), nil
}

// prune deletes the requests that ended more than Retention ago and
// returns the others. A failed deletion is left for the next prune.
func (s *Store) prune(ctx context.Context, all []*Request, now time.Time) []*Request {
	return slices.DeleteFunc(all, func(r *Request) bool {
		if !r.ended(now) {
			return false
		}
		return s.DropPayload(ctx, r.ID) == nil && s.a.UpdateAnchor(ctx, prefix+r.ID, func(old []byte) ([]byte, error) {
			if cur, err := decode(old); err != nil || !cur.ended(now) {
				return old, nil // changed since, or gone
			}
			return nil, nil
		}) == nil
	})
}

// ended reports whether r ended more than Retention before now.
func (r *Request) ended(now time.Time) bool {
	end := r.Finished
	switch r.StateAt(now) {
	case Denied:
		end = r.DecidedAt
	case Expired:
		end = r.Expires
	case Done, Failed:
	default:
		return false
	}
	return now.Sub(end) > Retention
}

// Get returns the request with id.
func (s *Store) Get(ctx context.Context, id string) (*Request, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	b, err := s.a.GetAnchor(ctx, prefix+id)
	if errs.Is(err, errs.NotFound) {
		return nil, errs.New(errs.NotFound, "approval %s: no such request", id)
	}
	if err != nil {
		return nil, err
	}
	return decode(b)
}

// List returns every request kept, oldest first.
func (s *Store) List(ctx context.Context) ([]*Request, error) {
	m, err := s.a.ListAnchors(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]*Request, 0, len(m))
	for name, b := range m {
		if r, err := decode(b); err == nil && strings.TrimPrefix(name, prefix) == r.ID {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *Request) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// Update applies fn to the request with id and stores what it leaves,
// atomically (fn may run more than once); an error from fn changes
// nothing and is returned. It returns the request as stored.
func (s *Store) Update(ctx context.Context, id string, fn func(*Request) error) (*Request, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	var out *Request
	err := s.a.UpdateAnchor(ctx, prefix+id, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, errs.New(errs.NotFound, "approval %s: no such request", id)
		}
		r, err := decode(old)
		if err != nil {
			return nil, err
		}
		if err := fn(r); err != nil {
			return nil, err
		}
		out = r
		return json.Marshal(r)
	})
	return out, err
}

func decode(b []byte) (*Request, error) {
	r := &Request{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, errs.New(errs.Internal, "corrupt approval record: %w", err)
	}
	return r, nil
}

// ExpireRestored marks every request of anchors (a restored snapshot's)
// that had not ended as expired at now: a backup is older than the
// present, so a request approved in it may have run since, and one
// pending may have been decided; none may run from the restored copy.
// It returns how many it expired.
func ExpireRestored(anchors map[string][]byte, now time.Time) (int, error) {
	n := 0
	for name, v := range anchors {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		var r Request
		if err := json.Unmarshal(v, &r); err != nil {
			return n, errs.New(errs.InvalidArgument, "the held request %s: %v", strings.TrimPrefix(name, prefix), err)
		}
		switch r.State {
		case Pending, Approved, Running:
		default:
			continue
		}
		r.State, r.Reason, r.DecidedAt = Expired, "restored from a backup: it may have been decided or run since", now
		r.Outbox.Raise(EventExpired)
		b, err := json.Marshal(&r)
		if err != nil {
			return n, err
		}
		anchors[name] = b
		n++
	}
	return n, nil
}
