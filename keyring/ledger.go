package keyring

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
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

// EncodeLedger is the stored form of rec: ledgerMagic; the length and
// JSON of its spends and fence; the length and bytes of Extra as they
// are; and a CRC-32C of all that. Extra (an Ethereum key's nonce record,
// tens of KiB) is rewritten with every claim and settle inside the
// store's serialised update; as a JSON field it was scanned and copied
// four times more (two thirds of the update's time). The lengths and the
// checksum make a record cut short or damaged unreadable, never read as
// one with fewer nonces (the JSON form could not be cut unnoticed
// either).
func EncodeLedger(rec *LedgerRecord) ([]byte, error) {
	head, err := json.Marshal(ledgerHead{Spends: rec.Spends, Fence: rec.Fence})
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(ledgerMagic)+2*binary.MaxVarintLen64+len(head)+len(rec.Extra)+crc32.Size)
	b = binary.AppendUvarint(append(b, ledgerMagic...), uint64(len(head)))
	b = binary.AppendUvarint(append(b, head...), uint64(len(rec.Extra)))
	b = append(b, rec.Extra...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

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
	if len(b) < len(ledgerMagic)+crc32.Size || crc32.Checksum(b[:len(b)-crc32.Size], castagnoli) != binary.BigEndian.Uint32(b[len(b)-crc32.Size:]) {
		return nil, errors.New("a ledger record cut short or damaged (its checksum does not match)")
	}
	head, rest, ok := lengthPrefixed(b[len(ledgerMagic) : len(b)-crc32.Size])
	extra, rest, ok2 := lengthPrefixed(rest)
	if !ok || !ok2 || len(rest) != 0 {
		return nil, errors.New("a ledger record whose lengths do not add up")
	}
	var h ledgerHead
	if err := json.Unmarshal(head, &h); err != nil {
		return nil, err
	}
	rec.Spends, rec.Fence = h.Spends, h.Fence
	if len(extra) > 0 {
		rec.Extra = bytes.Clone(extra)
	}
	return rec, nil
}

// lengthPrefixed splits b after a uvarint length and that many bytes.
func lengthPrefixed(b []byte) (field, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
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
