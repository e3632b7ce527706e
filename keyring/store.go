package keyring

import "context"

// Store persists keys. Every write is a compare-and-swap on the key's
// revision, so two writers racing on one key cannot both win.
type Store interface {
	// Get returns the key with its Revision set, or an errs.NotFound error.
	Get(ctx context.Context, id string) (*Key, error)
	// List returns every key, each with its Revision set.
	List(ctx context.Context) ([]*Key, error)
	// Put writes k if the stored revision equals k.Revision (zero: the key
	// must not exist) and returns the new revision. A key that exists when
	// k.Revision is zero gives errs.AlreadyExists; any other mismatch
	// gives errs.Aborted.
	Put(ctx context.Context, k *Key) (int64, error)
	// Delete removes the key if its stored revision equals rev.
	Delete(ctx context.Context, id string, rev int64) error
	// Close releases the store.
	Close() error
}

// Watcher is the ability of a store shared by several replicas to report
// what others change, so each replica's memory follows the store.
type Watcher interface {
	// ListAt returns every key and the store revision they were read at.
	ListAt(ctx context.Context) ([]*Key, int64, error)
	// Watch reports changes after revision from until ctx ends or the
	// watch breaks, and returns. A deletion comes with the store revision
	// it happened at.
	Watch(ctx context.Context, from int64, put func(*Key), del func(id string, rev int64)) error
}

// Anchors is the ability to keep small named values beside the keys,
// outside anything else Sigil writes: the latest signed audit checkpoint
// of each replica lives there, so a log cut short or rewritten is
// noticed against it.
type Anchors interface {
	// PutAnchor stores value under name, replacing what was there.
	PutAnchor(ctx context.Context, name string, value []byte) error
	// CreateAnchor stores value under name if nothing is there, in one
	// atomic step; otherwise it fails with errs.AlreadyExists.
	CreateAnchor(ctx context.Context, name string, value []byte) error
	// GetAnchor returns the value under name, or an errs.NotFound error.
	GetAnchor(ctx context.Context, name string) ([]byte, error)
	// ListAnchors returns every value whose name starts with prefix.
	ListAnchors(ctx context.Context, prefix string) (map[string][]byte, error)
	// UpdateAnchor applies fn to the value under name (nil if none) and
	// stores what it returns, atomically: of replicas racing on one name,
	// each fn sees the value the previous one stored. fn may run more than
	// once (a lost race is retried), so it must only compute. A nil result
	// deletes the value; an error from fn changes nothing and is returned.
	UpdateAnchor(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) error
}
