package groupcommit

import "sync"

// Group queues writes of type T, each a pointer that carries its own
// result, and commits them in batches. The zero Group is ready.
type Group[T any] struct {
	// Max is the most writes one commit takes (a store's limit on a
	// transaction's operations); 0 is no limit.
	Max int

	mu      sync.Mutex
	queue   []waiter[T]
	leading bool
}

// waiter is a queued write; done says true (committed) or false (lead
// the next batch).
type waiter[T any] struct {
	w    T
	done chan bool
}

// Do queues w and returns once commit has been called on a batch holding
// it and has returned. commit must record each write's outcome in it and
// must not panic.
func (g *Group[T]) Do(w T, commit func(batch []T)) {
	me := waiter[T]{w, make(chan bool, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, me)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	if !lead && <-me.done {
		return
	}
	g.mu.Lock() // leading: me is the queue's first
	n := len(g.queue)
	if g.Max > 0 {
		n = min(n, g.Max)
	}
	batch := g.queue[:n:n]
	g.queue = append([]waiter[T](nil), g.queue[n:]...)
	g.mu.Unlock()
	ws := make([]T, len(batch))
	for i, b := range batch {
		ws[i] = b.w
	}
	commit(ws)
	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].done <- false // the next batch is its to lead
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	for _, b := range batch[1:] {
		b.done <- true
	}
}
