package signer

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Opener opens a backend called name. decode fills the backend's own
// configuration struct from its section of the configuration file, strictly
// (an unknown field is an error).
type Opener func(ctx context.Context, name string, decode func(any) error) (Backend, error)

// Decoding adapts a backend's typed Open to an Opener: it decodes the
// backend's configuration section into C, then opens.
func Decoding[C any, B Backend](open func(ctx context.Context, name string, cfg C) (B, error)) Opener {
	return func(ctx context.Context, name string, decode func(any) error) (Backend, error) {
		var cfg C
		if err := decode(&cfg); err != nil {
			return nil, err
		}
		b, err := open(ctx, name, cfg)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
}

var registry = struct {
	sync.RWMutex
	m map[string]Opener
}{m: map[string]Opener{}}

// Register makes a backend type available to Open. It panics if typ is
// registered twice, as that is a programming error found at init.
func Register(typ string, open Opener) {
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.m[typ]; dup {
		panic("signer: backend type registered twice: " + typ)
	}
	registry.m[typ] = open
}

// Types lists the registered backend types.
func Types() []string {
	registry.RLock()
	defer registry.RUnlock()
	out := make([]string, 0, len(registry.m))
	for t := range registry.m {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Open opens the backend name of type typ.
func Open(ctx context.Context, typ, name string, decode func(any) error) (Backend, error) {
	registry.RLock()
	open, ok := registry.m[typ]
	registry.RUnlock()
	if !ok {
		return nil, errs.New(errs.InvalidArgument, "backend %q: unknown type %q (known: %v)", name, typ, Types())
	}
	b, err := open(ctx, name, decode)
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", name, err)
	}
	return b, nil
}
