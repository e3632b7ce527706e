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

// deliverEntry claims the outbox entry name, delivers it, and records
// what reached its hooks; once it reached every hook that wants it, the
// entry is deleted.
func (n *Notifier) deliverEntry(ctx context.Context, name string) {
	var e entry
	now := n.o.Now()
	err := n.o.Outbox.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, errNotDue
		}
		if err := json.Unmarshal(old, &e); err != nil {
			return nil, nil // not an entry of ours: dropped
		}
		if err := n.claim(&e.Outbox, []string{e.Body.Type}, now); err != nil {
			return nil, err
		}
		return json.Marshal(e)
	})
	if err != nil || e.Body.ID == "" {
		return
	}
	done, failed := n.send(ctx, n.pending(&e.Outbox, []string{e.Body.Type}), func(string) Body { return e.Body })
	err = n.o.Outbox.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) {
		var cur entry
		if old == nil || json.Unmarshal(old, &cur) != nil {
			return nil, nil
		}
		n.settle(&cur.Outbox, done, failed)
		if len(n.pending(&cur.Outbox, []string{cur.Body.Type})) == 0 {
			return nil, nil // delivered everywhere: done
		}
		return json.Marshal(cur)
	})
	if err != nil {
		n.o.Log.Warn("notify: recording deliveries (they will be made again)", "event", strings.TrimPrefix(name, outboxPrefix), "err", err)
	}
}
