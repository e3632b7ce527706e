package boltstore

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

func TestCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := &keyring.Key{ID: "a", Purpose: keyring.PurposeRaw}
	rev1, err := s.Put(ctx, k)
	if err != nil || rev1 == 0 {
		t.Fatal(rev1, err)
	}
	if _, err := s.Put(ctx, k); !errs.Is(err, errs.AlreadyExists) {
		t.Fatalf("create over an existing key: %v", err)
	}
	k.Revision = rev1
	rev2, err := s.Put(ctx, k)
	if err != nil || rev2 <= rev1 {
		t.Fatal(rev2, err)
	}
	if _, err := s.Put(ctx, k); !errs.Is(err, errs.Aborted) { // k.Revision is stale now
		t.Fatalf("stale write: %v", err)
	}
	got, err := s.Get(ctx, "a")
	if err != nil || got.Revision != rev2 {
		t.Fatal(got, err)
	}
	if err := s.Delete(ctx, "a", rev1); !errs.Is(err, errs.Aborted) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := s.Delete(ctx, "a", rev2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "a"); !errs.Is(err, errs.NotFound) {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(cctx, &keyring.Key{ID: "b"}); !errs.Is(err, errs.Canceled) {
		t.Fatalf("write with a canceled context: %v", err)
	}
}
