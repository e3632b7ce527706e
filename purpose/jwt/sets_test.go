package jwt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	"github.com/sigil-hsm/sigil/purpose/jwt"
)

// racingAnchors plays a creation that raced past the first limit check
// (the listing it sees holds none of the sets) and whose caller's
// deadline passes while its set is written.
type racingAnchors struct {
	*boltstore.Store
	lists  int
	cancel context.CancelFunc
}

func (a *racingAnchors) ListAnchors(ctx context.Context, prefix string) (map[string][]byte, error) {
	if a.lists++; a.lists == 1 {
		return map[string][]byte{}, nil
	}
	return a.Store.ListAnchors(ctx, prefix)
}

func (a *racingAnchors) CreateAnchor(ctx context.Context, name string, value []byte) error {
	err := a.Store.CreateAnchor(ctx, name, value)
	a.cancel()
	return err
}

// A scoped creator over its limit, found only by the check after the
// write, takes its set back even though its request's deadline passed
// meanwhile: no limit is exceeded for good.
func TestSetLimitsHoldWhenTheDeadlinePassesDuringTheWrite(t *testing.T) {
	store, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	by := jwt.Creator{Identity: "spiffe://t/a", Scoped: true}
	for i := range jwt.MaxSetsPerCreator {
		if _, err := (jwt.Sets{Anchors: store}).Create(context.Background(), fmt.Sprintf("a-%d", i), false, nil, by, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &racingAnchors{Store: store, cancel: cancel}
	_, err = (jwt.Sets{Anchors: a}).Create(ctx, "a-late", false, nil, by, time.Now())
	if !errs.Is(err, errs.ResourceExhausted) {
		t.Fatalf("the creation over the limit: %v, want ResourceExhausted", err)
	}
	all, err := store.ListAnchors(context.Background(), "jwks-set/")
	if err != nil {
		t.Fatal(err)
	}
	for name := range all {
		if strings.HasSuffix(name, "a-late") {
			t.Fatalf("the set over the limit stayed: %d sets", len(all))
		}
	}
}
