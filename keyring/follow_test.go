package keyring_test

import (
	"context"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/etcdstore"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
)

// lateWatcher creates a key through the keyring between the listing
// Follow reloads from and the moment it applies it, and reports whether
// the key is still known once applied.
type lateWatcher struct {
	*etcdstore.Store
	r     *keyring.Keyring
	known chan error
}

func (w *lateWatcher) ListAt(ctx context.Context) ([]*keyring.Key, int64, error) {
	keys, rev, err := w.Store.ListAt(ctx)
	if err == nil {
		_, err = w.r.Create(ctx, keyring.CreateSpec{ID: "late", Purpose: raw.Name, Algorithm: signer.ES256})
	}
	return keys, rev, err
}

func (w *lateWatcher) Watch(ctx context.Context, from int64, put func(*keyring.Key), del func(string, int64)) error {
	_, err := w.r.Get(ctx, "late")
	if err == nil {
		// A deletion of an earlier "late", replayed late by the watch: at a
		// revision before the key memory holds, so it is not forgotten.
		del("late", from)
		_, err = w.r.Get(ctx, "late")
	}
	w.known <- err
	<-ctx.Done()
	return nil
}

// A key this replica wrote after the listing a reload applies is not
// forgotten by that reload (it was: NotFound until the watch brought it
// back, seen as a creation answering NotFound under load), nor by a
// deletion the watch replays from before it was written.
func TestReloadKeepsKeysWrittenAfterItsListing(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := newEnv(t)
	r := e.keyring(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &lateWatcher{Store: s, r: r, known: make(chan error, 1)}
	go r.Follow(ctx, w)
	select {
	case err := <-w.known:
		if err != nil {
			t.Fatalf("a key created after the listing was forgotten by the reload: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Follow did not apply its listing")
	}
}
