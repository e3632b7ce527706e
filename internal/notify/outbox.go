package notify

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/errs"
)

// outboxPrefix names the store's entries of events of no request.
const outboxPrefix = "notify/outbox/"

// entry is one such event waiting in the store, with its deliveries.
type entry struct {
	Body   Body            `json:"body"`
	Outbox approval.Outbox `json:"outbox"`
}

// persist writes the events raised here to the store's outbox, oldest
// first; those the store does not take now (it is down: store.down is
// raised then) wait for the next pass.
func (n *Notifier) persist(ctx context.Context) {
	if n.o.Outbox == nil {
		return
	}
	defer n.prune(ctx)
	n.mu.Lock()
	queued := n.queued
	n.queued = nil
	n.mu.Unlock()
	for i, b := range queued {
		if err := n.enqueue(ctx, b); err != nil {
			n.mu.Lock()
			n.queued = append(queued[i:], n.queued...)
			n.mu.Unlock()
			return
		}
	}
}

// enqueue writes one event to the outbox; past maxWaiting entries it is
// dropped (and counted) rather than grow the store without bound.
func (n *Notifier) enqueue(ctx context.Context, b Body) error {
	if !n.wanted(b.Type) {
		return nil
	}
	all, err := n.o.Outbox.ListAnchors(ctx, outboxPrefix)
	if err != nil {
		return err
	}
	if len(all) >= maxWaiting {
		n.metrics.dropped.Inc()
		n.o.Log.Error("notify: the outbox is full; an event is dropped", "event", b.Type, "subject", b.Subject)
		return nil
	}
	v, err := json.Marshal(entry{Body: b})
	if err != nil {
		return err
	}
	err = n.o.Outbox.CreateAnchor(ctx, outboxPrefix+b.ID, v)
	if errs.Is(err, errs.AlreadyExists) {
		return nil
	}
	return err
}

// wanted reports whether any hook wants events of type typ.
func (n *Notifier) wanted(typ string) bool {
	for _, h := range n.o.Hooks {
		if h.wants(typ) {
			return true
		}
	}
	return false
}

// deliverEntry claims the deliveries of outbox entry name to h, makes
// them, and releases the claim; an entry delivered to every hook that
// wants it (or that no hook wants any more) is deleted.
func (n *Notifier) deliverEntry(ctx context.Context, name string, h Hook) {
	var e entry
	now := n.o.Now()
	err := n.o.Outbox.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, errNotDue
		}
		if err := json.Unmarshal(old, &e); err != nil {
			return nil, nil // not an entry of ours: dropped
		}
		if err := n.claim(&e.Outbox, []string{e.Body.Type}, h, now); err != nil {
			return nil, err
		}
		return json.Marshal(e)
	})
	if err != nil || e.Body.ID == "" {
		return
	}
	update := func(fn func(o *approval.Outbox)) error {
		return n.o.Outbox.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) {
			var cur entry
			if old == nil || json.Unmarshal(old, &cur) != nil {
				return nil, nil
			}
			fn(&cur.Outbox)
			if !n.owedAnywhere(&cur) {
				return nil, nil // delivered to every hook that wants it: done
			}
			return json.Marshal(cur)
		})
	}
	failed := n.round(ctx, h, now, pending(&e.Outbox, []string{e.Body.Type}, h), func(string) Body { return e.Body },
		func(k string) error { return update(func(o *approval.Outbox) { delivered(o, k) }) })
	if err := update(func(o *approval.Outbox) { n.release(o, h, failed) }); err != nil {
		n.o.Log.Warn("notify: releasing a delivery claim (it lapses)", "event", strings.TrimPrefix(name, outboxPrefix), "err", err)
	}
}

// owedAnywhere reports whether a hook still wants entry e and has not had it.
func (n *Notifier) owedAnywhere(e *entry) bool {
	for _, h := range n.o.Hooks {
		if len(pending(&e.Outbox, []string{e.Body.Type}, h)) > 0 {
			return true
		}
	}
	return false
}

// prune deletes the entries no configured hook is owed any more (the
// hooks changed since they were raised): they would wait for good.
func (n *Notifier) prune(ctx context.Context) {
	entries, err := n.o.Outbox.ListAnchors(ctx, outboxPrefix)
	if err != nil {
		return
	}
	for name, b := range entries {
		var e entry
		if json.Unmarshal(b, &e) != nil || n.owedAnywhere(&e) {
			continue
		}
		_ = n.o.Outbox.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) {
			var cur entry
			if old != nil && json.Unmarshal(old, &cur) == nil && n.owedAnywhere(&cur) {
				return old, nil
			}
			return nil, nil
		})
	}
}
