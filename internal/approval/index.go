package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
)

// indexPrefix names each namespace's index of the requests it holds.
// Hold decides a request's retry and the bounds on a requester and a
// namespace inside the compare-and-swap that adds the request to its
// namespace's index, never on a listing read a moment before: two
// identical requests held at the same moment, on one replica or two,
// make one approval, and concurrent requests cannot pass a bound.
const indexPrefix = "approval-index/"

// grace is how long an index entry whose record is not there yet counts
// as a request being held (its Hold writes the record just after the
// index); past it, the record was never written (a crash, a store that
// failed) or was pruned, and the entry is dropped.
const grace = time.Minute

// entry is what a namespace's index keeps of a request: what a retry is
// recognised by, and when the request was found to have ended (found
// once, kept: a request that ended never runs again).
type entry struct {
	ID            string     `json:"id"`
	Requester     string     `json:"requester"`
	Method        string     `json:"method"`
	KeyID         string     `json:"key_id,omitempty"`
	PayloadSHA256 string     `json:"payload_sha256"`
	Created       time.Time  `json:"created"`
	Expires       time.Time  `json:"expires"`
	Ended         *time.Time `json:"ended,omitempty"`
}

func entryOf(r *Request) entry {
	return entry{ID: r.ID, Requester: r.Requester, Method: r.Method, KeyID: r.KeyID, PayloadSHA256: r.PayloadSHA256, Created: r.Created, Expires: r.Expires}
}

func (e *entry) sameAs(r *Request) bool {
	return e.Requester == r.Requester && e.Method == r.Method && e.KeyID == r.KeyID && e.PayloadSHA256 == r.PayloadSHA256
}

// kept reports whether e still counts against its namespace's bound at
// now: a request's record is kept Retention after it ends. One not read
// since it ended counts a Retention longer than it expired (a run
// approved in time may end after its expiry).
func (e *entry) kept(now time.Time) bool {
	if e.Ended != nil {
		return now.Sub(*e.Ended) <= Retention
	}
	return now.Sub(e.Expires) <= 2*Retention
}

// errIndexChanged is a lost race on the index: Hold reads again.
var errIndexChanged = errors.New("the approval index changed")

// hold adds r to its namespace's index unless the index holds a live
// request r retries (returned instead) or a bound refuses it. It reads
// the index and the records it needs, decides, and writes the index
// only if it is still what it read.
func (s *Store) hold(ctx context.Context, r *Request, now time.Time) (*entry, error) {
	name := indexPrefix + r.InNamespace()
	for try := 0; ; try++ {
		raw, idx, err := s.readIndex(ctx, name, r.InNamespace())
		if err != nil {
			return nil, err
		}
		idx, retried, err := s.decide(ctx, idx, r, now)
		if err != nil || retried != nil {
			return retried, err
		}
		next, err := json.Marshal(append(idx, entryOf(r)))
		if err != nil {
			return nil, err
		}
		err = s.a.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) {
			if !bytes.Equal(old, raw) {
				return nil, errIndexChanged
			}
			return next, nil
		})
		if !errors.Is(err, errIndexChanged) {
			return nil, err
		}
		if try == 16 {
			return nil, errs.New(errs.Unavailable, "approvals: requests in namespace %s are being held too fast; retry", r.InNamespace())
		}
	}
}

// readIndex returns the index under name as stored (nil if none) and
// decoded. A namespace with no index yet (its requests were held by an
// earlier release) starts from the records it holds.
func (s *Store) readIndex(ctx context.Context, name, ns string) ([]byte, []entry, error) {
	raw, err := s.a.GetAnchor(ctx, name)
	if errs.Is(err, errs.NotFound) {
		all, err := s.List(ctx)
		if err != nil {
			return nil, nil, err
		}
		var idx []entry
		for _, o := range all {
			if o.InNamespace() == ns {
				idx = append(idx, entryOf(o))
			}
		}
		return nil, idx, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var idx []entry
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, nil, errs.New(errs.Internal, "corrupt approval index %s: %w", name, err)
	}
	return raw, idx, nil
}

// decide applies the index's bounds to r: it returns the index as it
// stands at now (entries that ended marked, those gone dropped), or the
// entry of the live request r retries, or the bound r passes.
func (s *Store) decide(ctx context.Context, idx []entry, r *Request, now time.Time) ([]entry, *entry, error) {
	idx, err := s.refresh(ctx, idx, now, func(e *entry) bool { return e.Requester == r.Requester })
	if err != nil {
		return nil, nil, err
	}
	mine := 0
	for i := range idx {
		e := &idx[i]
		if e.Requester != r.Requester || e.Ended != nil {
			continue
		}
		if e.sameAs(r) {
			return nil, e, nil
		}
		mine++
	}
	if mine >= PerRequester {
		return nil, nil, errs.New(errs.ResourceExhausted, "approvals: %s holds %d requests awaiting approval already", r.Requester, mine)
	}
	if r.InNamespace() != namespace.Root && len(idx) >= PerNamespace {
		// Entries not read yet may have ended long enough ago to be
		// gone: read them all before refusing.
		if idx, err = s.refresh(ctx, idx, now, func(*entry) bool { return true }); err != nil {
			return nil, nil, err
		}
		if len(idx) >= PerNamespace {
			return nil, nil, errs.New(errs.ResourceExhausted, "approvals: namespace %s holds %d requests already", r.InNamespace(), len(idx))
		}
	}
	return idx, nil, nil
}

// refresh reads the record of every entry of idx that which selects and
// that has not ended, marks the entries of requests that ended, and
// drops the entries no longer kept: whose record is gone past grace, or
// that ended more than Retention ago. What it learns holds for good: a
// request that ended never runs again, and one pruned never comes back.
func (s *Store) refresh(ctx context.Context, idx []entry, now time.Time, which func(*entry) bool) ([]entry, error) {
	out := idx[:0:0]
	for _, e := range idx {
		if e.Ended == nil && which(&e) {
			r, err := s.Get(ctx, e.ID)
			switch {
			case errs.Is(err, errs.NotFound):
				if now.Sub(e.Created) > grace {
					continue
				}
			case err != nil:
				return nil, err
			default:
				if end, ok := r.endedAt(now); ok {
					e.Ended = &end
				}
			}
		}
		if e.kept(now) {
			out = append(out, e)
		}
	}
	return out, nil
}

// unindex removes the entry of a request whose record could not be
// written; if the store fails again, the entry lapses after grace.
func (s *Store) unindex(ctx context.Context, r *Request) {
	s.a.UpdateAnchor(ctx, indexPrefix+r.InNamespace(), func(old []byte) ([]byte, error) {
		var idx []entry
		if err := json.Unmarshal(old, &idx); err != nil {
			return old, nil
		}
		for i := range idx {
			if idx[i].ID == r.ID {
				return json.Marshal(append(idx[:i], idx[i+1:]...))
			}
		}
		return old, nil
	})
}

// retried returns the record of the live request e a Hold retries. Its
// own Hold writes the record just after the index, so a record not
// there yet is waited for, a little.
func (s *Store) retried(ctx context.Context, e *entry) (*Request, error) {
	for range 50 {
		r, err := s.Get(ctx, e.ID)
		if !errs.Is(err, errs.NotFound) {
			return r, err
		}
		select {
		case <-ctx.Done():
			return nil, errs.FromContext(ctx, "waiting for an identical request to be held")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil, errs.New(errs.Unavailable, "approval %s: an identical request is being held; retry", e.ID)
}
