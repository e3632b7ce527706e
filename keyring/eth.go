package keyring

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Wei is an amount of wei, kept in JSON as a decimal string.
type Wei struct{ big.Int }

// ParseWei parses a non-negative decimal integer.
func ParseWei(field, s string) (*Wei, error) {
	var w Wei
	if _, ok := w.SetString(s, 10); !ok || w.Sign() < 0 || w.BitLen() > 256 {
		return nil, errs.New(errs.InvalidArgument, "%s: %q is not a decimal amount of wei below 2^256", field, s)
	}
	return &w, nil
}

// MarshalJSON writes w as a decimal string.
func (w *Wei) MarshalJSON() ([]byte, error) { return []byte(`"` + w.String() + `"`), nil }

// UnmarshalJSON reads a decimal string.
func (w *Wei) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if _, ok := w.SetString(s, 10); !ok {
		return fmt.Errorf("bad wei amount %q", s)
	}
	return nil
}

// EthPolicy is an Ethereum key's spending policy. It is checked before the
// HSM is called. Unset limits do not limit; but a key signs transactions
// for no chain until one is allowed.
type EthPolicy struct {
	ChainIDs       []uint64         `json:"chain_ids"`
	MaxValue       *Wei             `json:"max_value,omitempty"`   // per transaction
	MaxFee         *Wei             `json:"max_fee,omitempty"`     // gas × max fee per gas (+ blob gas × blob fee cap)
	DailyLimit     *Wei             `json:"daily_limit,omitempty"` // value over a rolling 24 hours
	AllowTo        []common.Address `json:"allow_to,omitempty"`    // destinations; any if empty
	AllowSelectors [][4]byte        `json:"allow_selectors,omitempty"`
}

// DailyWindow is the span the daily limit counts over.
const DailyWindow = 24 * time.Hour

// ParseSelector parses a 4-byte function selector, 0x12345678.
func ParseSelector(s string) ([4]byte, error) {
	var sel [4]byte
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil || len(b) != 4 {
		return sel, errs.New(errs.InvalidArgument, "allow-selector: %q is not a 4-byte selector like 0xa9059cbb", s)
	}
	copy(sel[:], b)
	return sel, nil
}

// ParseAddress parses a hex address; a mixed-case one must carry a valid
// EIP-55 checksum, so a mistyped allowlist entry is caught.
func ParseAddress(field, s string) (common.Address, error) {
	if !common.IsHexAddress(s) {
		return common.Address{}, errs.New(errs.InvalidArgument, "%s: %q is not an address", field, s)
	}
	a := common.HexToAddress(s)
	if body := strings.TrimPrefix(s, "0x"); body != strings.ToLower(body) && body != strings.ToUpper(body) && a.Hex() != "0x"+body {
		return common.Address{}, errs.New(errs.InvalidArgument, "%s: %q fails its EIP-55 checksum", field, s)
	}
	return a, nil
}

// AllowsChain reports whether the policy signs for chain id.
func (p *EthPolicy) AllowsChain(id uint64) bool { return p != nil && slices.Contains(p.ChainIDs, id) }

// Ledger counts what keys spend, for daily limits. Reserve is atomic: two
// concurrent reservations cannot both pass the last of a limit.
type Ledger interface {
	// Reserve records amount against key id's spending in the window
	// ending at now, if that stays within limit, and returns a handle to
	// release it; past the limit it fails with errs.PermissionDenied.
	Reserve(ctx context.Context, id string, amount, limit *big.Int, now time.Time, window time.Duration) (string, error)
	// Release removes a reservation whose signature was never made.
	Release(ctx context.Context, id, reservation string) error
}

// SetEthPolicy replaces the spending policy of Ethereum key id.
func (r *Keyring) SetEthPolicy(ctx context.Context, id string, p EthPolicy) (*Key, error) {
	if _, err := r.Get(ctx, id); err != nil {
		return nil, err
	}
	return r.update(ctx, id, func(k *Key, _ time.Time) error {
		if k.Purpose != PurposeEth {
			return errs.New(errs.FailedPrecondition, "key %q has purpose %s; spending policies apply to eth keys", id, k.Purpose)
		}
		k.Eth = &p
		return nil
	})
}

// Spend is one reservation against an Ethereum key's spending limit, as
// the stores keep it.
type Spend struct {
	ID     string    `json:"id"`
	At     time.Time `json:"at"`
	Amount Wei       `json:"amount"`
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
	spends = slices.DeleteFunc(spends, func(sp Spend) bool { return !sp.At.After(now.Add(-window)) })
	used := new(big.Int)
	for _, sp := range spends {
		used.Add(used, &sp.Amount.Int)
	}
	if new(big.Int).Add(used, amount).Cmp(limit) > 0 {
		return nil, errs.New(errs.PermissionDenied, "daily limit: %s wei spent in the last %v, %s more would pass the limit of %s", used, window, amount, limit)
	}
	var w Wei
	w.Set(amount)
	return append(spends, Spend{ID: id, At: now, Amount: w}), nil
}

// Release removes reservation id from spends.
func Release(spends []Spend, id string) []Spend {
	return slices.DeleteFunc(spends, func(sp Spend) bool { return sp.ID == id })
}
