package keyring

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Amount is a non-negative integer amount (wei, for Ethereum keys), kept
// in JSON as a decimal string.
type Amount struct{ big.Int }

// MarshalJSON writes a as a decimal string.
func (a *Amount) MarshalJSON() ([]byte, error) { return []byte(`"` + a.String() + `"`), nil }

// UnmarshalJSON reads a decimal string.
func (a *Amount) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if _, ok := a.SetString(s, 10); !ok {
		return fmt.Errorf("bad amount %q", s)
	}
	return nil
}

// Ledger keeps, per key, a record a purpose updates atomically with what
// it is about to sign: an Ethereum key's spends against its daily limit
// and the nonces it signed. The stores keep it beside the keys; two
// replicas updating one key's record cannot both pass the last of a
// limit or both claim one nonce.
type Ledger interface {
	// UpdateLedger applies fn to key id's record and stores what fn
	// leaves, atomically; fn may run more than once (a lost race is
	// retried), so it must only change the record. An error from fn
	// changes nothing and is returned.
	UpdateLedger(ctx context.Context, id string, fn func(*LedgerRecord) error) error
	// ReadLedger returns key id's record (empty if it has none).
	ReadLedger(ctx context.Context, id string) (*LedgerRecord, error)
}

// LedgerRecord is one key's ledger: its spends, and Extra, what its
// purpose keeps besides (an Ethereum key's signed nonces), opaque here.
type LedgerRecord struct {
	Spends []Spend         `json:"spends,omitempty"`
	Extra  json.RawMessage `json:"extra,omitempty"`
	// Fence, if set, refuses every claim until reconciled (a restore).
	Fence *Fence `json:"fence,omitempty"`
}

// ledgerMagic begins a record's stored form: no JSON form (an object or
// a list) begins so.
var ledgerMagic = []byte{0, 'S', 'L', 1}

// ledgerHead is what a stored record holds besides Extra.
type ledgerHead struct {
	Spends []Spend `json:"spends,omitempty"`
	Fence  *Fence  `json:"fence,omitempty"`
}

// EncodeLedger is the stored form of rec: ledgerMagic, the length and
// JSON of its spends and fence, then Extra's bytes as they are. Extra (an
// Ethereum key's nonce record, tens of KiB) is rewritten with every
// claim and settle inside the store's serialised update; as a JSON
// field it was scanned and copied four times more (two thirds of the
// update's time).
func EncodeLedger(rec *LedgerRecord) ([]byte, error) {
	head, err := json.Marshal(ledgerHead{Spends: rec.Spends, Fence: rec.Fence})
	if err != nil {
		return nil, err
	}
	b := binary.AppendUvarint(append(make([]byte, 0, len(ledgerMagic)+binary.MaxVarintLen64+len(head)+len(rec.Extra)), ledgerMagic...), uint64(len(head)))
	return append(append(b, head...), rec.Extra...), nil
}

// DecodeLedger reads a stored record: the stored form above, or an
// earlier one (a JSON object; first of all a bare list of spends). Extra
// is a copy, so b may be a store's buffer that lives no longer than its
// transaction.
func DecodeLedger(b []byte) (*LedgerRecord, error) {
	rec := &LedgerRecord{}
	switch {
	case len(b) == 0:
		return rec, nil
	case b[0] == '[':
		return rec, json.Unmarshal(b, &rec.Spends)
	case !bytes.HasPrefix(b, ledgerMagic):
		return rec, json.Unmarshal(b, rec)
	}
	n, k := binary.Uvarint(b[len(ledgerMagic):])
	rest := b[len(ledgerMagic)+max(k, 0):]
	if k <= 0 || n > uint64(len(rest)) {
		return nil, fmt.Errorf("a ledger record cut short")
	}
	var head ledgerHead
	if err := json.Unmarshal(rest[:n], &head); err != nil {
		return nil, err
	}
	rec.Spends, rec.Fence = head.Spends, head.Fence
	if extra := rest[n:]; len(extra) > 0 {
		rec.Extra = bytes.Clone(extra)
	}
	return rec, nil
}

// Spend is one reservation against a key's spending limit, as the stores
// keep it.
type Spend struct {
	ID     string    `json:"id"`
	At     time.Time `json:"at"`
	Amount Amount    `json:"amount"`
}

// NewReservationID is a random handle for a reservation.
func NewReservationID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Reserve is the spending-limit arithmetic every Ledger runs inside its
// own atomic update: it drops the spends that left the window ending at
// now, and adds reservation id for amount if the window's total stays
// within limit, else refuses with PermissionDenied.
func Reserve(spends []Spend, id string, amount, limit *big.Int, now time.Time, window time.Duration) ([]Spend, error) {
	spends = inWindow(spends, now, window)
	used := Spent(spends, now, window)
	if new(big.Int).Add(used, amount).Cmp(limit) > 0 {
		return nil, errs.New(errs.PermissionDenied, "spending limit: %s spent in the last %v, %s more would pass the limit of %s", used, window, amount, limit)
	}
	var a Amount
	a.Set(amount)
	return append(spends, Spend{ID: id, At: now, Amount: a}), nil
}

// inWindow drops the spends that left the window ending at now.
func inWindow(spends []Spend, now time.Time, window time.Duration) []Spend {
	return slices.DeleteFunc(spends, func(sp Spend) bool { return !sp.At.After(now.Add(-window)) })
}

// Spent is the total of spends in the window ending at now.
func Spent(spends []Spend, now time.Time, window time.Duration) *big.Int {
	used := new(big.Int)
	for _, sp := range spends {
		if sp.At.After(now.Add(-window)) {
			used.Add(used, &sp.Amount.Int)
		}
	}
	return used
}

// Release removes reservation id from spends.
func Release(spends []Spend, id string) []Spend {
	return slices.DeleteFunc(spends, func(sp Spend) bool { return sp.ID == id })
}
