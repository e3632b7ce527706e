package console

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
)

// A cancelled link registers nothing; a used one cannot be cancelled
// (its passkey is what to revoke); an expired one is not pending.
func TestCancelledLinksRegisterNothing(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, ctx, now := Store{A: st}, context.Background(), time.Now()
	const who = "spiffe://example.org/alice"
	cancelled, _, err := s.Enroll(ctx, who, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	used, _, _ := s.Enroll(ctx, who, time.Hour, now)
	short, _, _ := s.Enroll(ctx, who, time.Minute, now)
	if err := s.Cancel(ctx, LinkID(cancelled), now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.peek(ctx, cancelled, now); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("a cancelled link starts a registration: %v", err)
	}
	if _, err := s.redeem(ctx, cancelled, now); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("a cancelled link registers: %v", err)
	}
	if _, err := s.redeem(ctx, used, now); err != nil {
		t.Fatal(err)
	}
	if err := s.Cancel(ctx, LinkID(used), now); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("cancelling a used link: %v", err)
	}
	pending, err := s.PendingLinks(ctx, now.Add(2*time.Minute))
	if err != nil || len(pending) != 0 {
		t.Errorf("pending once the short link expired: %+v %v", pending, err)
	}
	if pending, _ := s.PendingLinks(ctx, now); len(pending) != 1 || pending[0].LinkID != LinkID(short) {
		t.Errorf("pending now: %+v", pending)
	}
}
