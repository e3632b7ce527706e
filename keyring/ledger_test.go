package keyring

import (
	"bytes"
	"encoding/json"
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

// A record reads back as it was written, Extra byte for byte; the
// earlier JSON forms (an object; first of all a bare list of spends)
// still read; a stored form cut short anywhere (right before Extra too:
// it would read as a key that signed no nonce) or damaged is refused.
func TestLedgerRecordForms(t *testing.T) {
	var a Amount
	a.Set(big.NewInt(5))
	at := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	rec := &LedgerRecord{Spends: []Spend{{ID: "r1", At: at, Amount: a}}, Extra: json.RawMessage(`{"chains":{"1":{"highest":3}}}`), Fence: &Fence{Since: at, Reason: "restored"}}
	b, err := EncodeLedger(rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeLedger(b)
	if err != nil || !bytes.Equal(got.Extra, rec.Extra) || len(got.Spends) != 1 || got.Spends[0].Amount.Cmp(big.NewInt(5)) != 0 || got.Fence == nil || got.Fence.Reason != "restored" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	b[len(b)-1] = 'X' // the copy is the record's own
	if got.Extra[len(got.Extra)-1] != '}' {
		t.Fatal("Extra shares the stored bytes")
	}
	old, _ := json.Marshal(rec)
	if got, err := DecodeLedger(old); err != nil || !bytes.Equal(got.Extra, rec.Extra) || got.Fence == nil {
		t.Fatalf("the JSON form: %+v %v", got, err)
	}
	if got, err := DecodeLedger([]byte(`[{"id":"r0","at":"2026-12-06T00:00:00Z","amount":"7"}]`)); err != nil || len(got.Spends) != 1 || got.Spends[0].Amount.Cmp(big.NewInt(7)) != 0 {
		t.Fatalf("the first form: %+v %v", got, err)
	}
	whole, _ := EncodeLedger(rec)
	for n := len(ledgerMagic); n < len(whole); n++ { // cut anywhere, Extra's start included
		if _, err := DecodeLedger(whole[:n]); err == nil {
			t.Fatalf("a record cut to %d of %d bytes read", n, len(whole))
		}
	}
	for i := len(ledgerMagic); i < len(whole); i += 7 {
		damaged := bytes.Clone(whole)
		damaged[i] ^= 0x10
		if _, err := DecodeLedger(damaged); err == nil {
			t.Fatalf("a record with byte %d damaged read", i)
		}
	}
	empty, _ := EncodeLedger(&LedgerRecord{})
	if got, err := DecodeLedger(empty); err != nil || got.Extra != nil || got.Spends != nil || got.Fence != nil {
		t.Fatalf("an empty record: %+v %v", got, err)
	}
}
