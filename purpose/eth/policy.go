package eth

import (
	"bytes"
	"encoding/hex"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

// Wei is an amount of wei, kept in JSON as a decimal string.
type Wei = keyring.Amount

// ParseWei parses a non-negative decimal integer below 2^256.
func ParseWei(field, s string) (*Wei, error) {
	var w Wei
	if _, ok := w.SetString(s, 10); !ok || w.Sign() < 0 || w.BitLen() > 256 {
		return nil, errs.New(errs.InvalidArgument, "%s: %q is not a decimal amount of wei below 2^256", field, s)
	}
	return &w, nil
}

// Policy is an Ethereum key's spending policy. It is checked before the
// HSM is called. Unset limits do not limit; but a key signs transactions
// for no chain until one is allowed.
type Policy struct {
	ChainIDs       []uint64         `json:"chain_ids"`
	MaxValue       *Wei             `json:"max_value,omitempty"`   // per transaction
	MaxFee         *Wei             `json:"max_fee,omitempty"`     // gas × max fee per gas (+ blob gas × blob fee cap)
	DailyLimit     *Wei             `json:"daily_limit,omitempty"` // value over a rolling DailyWindow
	AllowTo        []common.Address `json:"allow_to,omitempty"`    // destinations; any if empty
	AllowSelectors [][4]byte        `json:"allow_selectors,omitempty"`
	// MaxNonceGap refuses a nonce more than this past the highest signed
	// on its chain (unset: any).
	MaxNonceGap *uint64 `json:"max_nonce_gap,omitempty"`
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
func (p *Policy) AllowsChain(id uint64) bool { return p != nil && slices.Contains(p.ChainIDs, id) }

// Check applies key k's spending policy to u, all but the daily limit
// (which needs the ledger). Its errors name the rule that denied.
func Check(k *keyring.Key, u Unsigned) error {
	p := PolicyOf(k)
	if !p.AllowsChain(u.ChainID.Uint64()) {
		var allowed []uint64
		if p != nil {
			allowed = p.ChainIDs
		}
		return errs.New(errs.FailedPrecondition, "policy chain-ids: key %q does not sign for chain %s (allowed: %v)", k.ID, u.ChainID, allowed)
	}
	tx := u.Tx
	if len(p.AllowTo) > 0 {
		if tx.To() == nil {
			return errs.New(errs.PermissionDenied, "policy allow-to: contract creation is not an allowed destination")
		}
		if !slices.Contains(p.AllowTo, *tx.To()) {
			return errs.New(errs.PermissionDenied, "policy allow-to: %s is not an allowed destination", tx.To().Hex())
		}
	}
	if p.MaxValue != nil && tx.Value().Cmp(&p.MaxValue.Int) > 0 {
		return errs.New(errs.PermissionDenied, "policy max-value: value %s wei exceeds %s", tx.Value(), &p.MaxValue.Int)
	}
	if fee := MaxFee(tx); p.MaxFee != nil && fee.Cmp(&p.MaxFee.Int) > 0 {
		return errs.New(errs.PermissionDenied, "policy max-fee: up to %s wei of fees exceeds %s", fee, &p.MaxFee.Int)
	}
	if len(p.AllowSelectors) > 0 && len(tx.Data()) > 0 {
		if len(tx.Data()) < 4 || !slices.ContainsFunc(p.AllowSelectors, func(s [4]byte) bool { return bytes.Equal(s[:], tx.Data()[:4]) }) {
			return errs.New(errs.PermissionDenied, "policy allow-selector: call data does not start with an allowed function selector")
		}
	}
	return nil
}

// MaxFee is the most the transaction can pay in fees: gas × max fee per
// gas (the gas price for legacy and access-list transactions), plus blob
// gas × max fee per blob gas.
func MaxFee(tx *types.Transaction) *big.Int {
	fee := new(big.Int).Mul(new(big.Int).SetUint64(tx.Gas()), tx.GasFeeCap())
	if tx.Type() == types.BlobTxType {
		fee.Add(fee, new(big.Int).Mul(new(big.Int).SetUint64(tx.BlobGas()), tx.BlobGasFeeCap()))
	}
	return fee
}
