package keyring

import (
	"context"
	"errors"
	"regexp"
	"strconv"

	"github.com/sigil-hsm/sigil/signer"
)

// namePattern is the shape of the names the keyring gives backend keys:
// "ID.gN". The sweep touches nothing else.
var namePattern = regexp.MustCompile(`^([a-z0-9][a-z0-9._-]{0,63})\.g([1-9][0-9]{0,8})$`)

// sweep destroys backend keys that no key record names: leftovers of a
// crash or a failed cleanup. Each backend that can list Sigil's keys is
// listed first and the store read after, so a creation in flight (which
// records its generation before it makes the key) is always seen as
// recorded. An unrecorded key is destroyed only when a sweep at least
// OrphanGrace after the one that first saw it still finds it unrecorded.
// The caller holds r.ticking.
func (r *Keyring) sweep(ctx context.Context) error {
	listed := map[string][]signer.ListedKey{}
	var failed []error
	for name, b := range r.backends {
		if _, ok := b.(signer.KeyManager); !ok {
			continue
		}
		if kl, ok := b.(signer.KeyLister); ok {
			keys, err := kl.ListKeys(ctx, r.owner)
			if err != nil {
				failed = append(failed, err)
				continue
			}
			listed[name] = keys
		}
	}
	recorded, err := r.recordedNames(ctx)
	if err != nil {
		return errors.Join(append(failed, err)...)
	}
	seen := map[string]bool{}
	for backend, keys := range listed {
		for _, lk := range keys {
			m := namePattern.FindStringSubmatch(lk.Name)
			if m == nil || recorded[backend+"\x00"+lk.Name] {
				continue
			}
			id := backend + "\x00" + lk.Ref
			seen[id] = true
			first, ok := r.orphans[id]
			if !ok {
				r.orphans[id] = r.now()
				continue
			}
			if r.now().Sub(first) < r.orphanGrace {
				continue
			}
			if err := r.backends[backend].(signer.KeyManager).DestroyKey(ctx, lk.Ref); err != nil {
				failed = append(failed, err)
				continue
			}
			delete(r.orphans, id)
			n, _ := strconv.Atoi(m[2])
			r.repaired(Repair{Kind: RepairOrphan, KeyID: m[1], Generation: n, Backend: backend, Ref: lk.Ref})
		}
	}
	for id := range r.orphans {
		if !seen[id] {
			delete(r.orphans, id)
		}
	}
	return errors.Join(failed...)
}

// recordedNames returns backend+"\x00"+name for every generation the
// store records whose objects may exist (all but destroyed ones).
func (r *Keyring) recordedNames(ctx context.Context) (map[string]bool, error) {
	keys, err := r.store.List(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, k := range keys {
		for _, g := range k.Generations {
			if g.State != StateDestroyed {
				out[k.Backend+"\x00"+g.Name] = true
			}
		}
	}
	return out, nil
}
