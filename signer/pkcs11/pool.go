//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// pool hands out at most size sessions at once. Checkout waits for a free
// session until the caller's context ends. Sessions carry the epoch they
// were opened in; bumping the epoch (after an error that may have closed
// every session, such as C_CloseAllSessions or a lost login) retires all
// older sessions as they come back, instead of handing them out to fail.
type pool struct {
	slots chan struct{} // one token per session that may be checked out
	open  func() (pkcs11.SessionHandle, error)
	close func(pkcs11.SessionHandle)

	mu    sync.Mutex
	idle  []pooled
	epoch uint64

	waits atomic.Uint64
}

type pooled struct {
	h     pkcs11.SessionHandle
	epoch uint64
}

func newPool(size int, open func() (pkcs11.SessionHandle, error), close func(pkcs11.SessionHandle)) *pool {
	return &pool{slots: make(chan struct{}, size), open: open, close: close}
}

// get checks a session out. A context already done gives DeadlineExceeded
// or Canceled; a deadline that passes while every session is busy gives
// ResourceExhausted.
func (p *pool) get(ctx context.Context) (pooled, error) {
	if err := errs.FromContext(ctx, "waiting for an HSM session"); err != nil {
		return pooled{}, err
	}
	select {
	case p.slots <- struct{}{}:
	default:
		p.waits.Add(1)
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return pooled{}, errs.New(errs.ResourceExhausted, "all %d HSM sessions busy until the deadline", cap(p.slots))
			}
			return pooled{}, errs.FromContext(ctx, "waiting for an HSM session")
		}
	}
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		s := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return s, nil
	}
	epoch := p.epoch
	p.mu.Unlock()
	h, err := p.open()
	if err != nil {
		<-p.slots
		return pooled{}, err
	}
	return pooled{h: h, epoch: epoch}, nil
}

// put returns a healthy session; one from an older epoch is closed.
func (p *pool) put(s pooled) {
	p.mu.Lock()
	if s.epoch == p.epoch {
		p.idle = append(p.idle, s)
		s.h = 0
	}
	p.mu.Unlock()
	if s.h != 0 {
		p.close(s.h)
	}
	<-p.slots
}

// discard closes a broken session and retires every idle one with it.
func (p *pool) discard(s pooled) {
	p.close(s.h)
	p.reset()
	<-p.slots
}

// reset starts a new epoch and closes the idle sessions.
func (p *pool) reset() {
	for _, s := range p.forget() {
		p.close(s.h)
	}
}

// forget starts a new epoch and drops the idle sessions without closing
// them (after C_Finalize their handles are void), returning them.
func (p *pool) forget() []pooled {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.epoch++
	idle := p.idle
	p.idle = nil
	return idle
}

func (p *pool) stats() signer.PoolStats {
	return signer.PoolStats{Size: cap(p.slots), InUse: len(p.slots), Waits: p.waits.Load()}
}
