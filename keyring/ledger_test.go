package keyring

import (
	"math/big"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// The spending arithmetic both stores run: the window is the one asked
// for, spends leave it exactly at its edge, and the limit is inclusive.
func TestReserveHonoursTheWindowAndTheLimit(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	limit := big.NewInt(100)
	var spends []Spend
	var err error
	for i, at := range []time.Duration{-90 * time.Minute, -30 * time.Minute} {
		if spends, err = Reserve(spends, string(rune('a'+i)), big.NewInt(40), limit, now.Add(at), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// At now, the spend of 90 minutes ago has left the hour: 40 used.
	if spends, err = Reserve(spends, "c", big.NewInt(60), limit, now, time.Hour); err != nil || len(spends) != 2 {
		t.Fatalf("within the limit: %v, %d spends", err, len(spends))
	}
	if _, err := Reserve(spends, "d", big.NewInt(1), limit, now, time.Hour); !errs.Is(err, errs.PermissionDenied) {
		t.Fatalf("one wei past the limit: %v", err)
	}
	if got := Release(spends, "c"); len(got) != 1 || got[0].ID != "b" {
		t.Fatalf("release: %+v", got)
	}
}
