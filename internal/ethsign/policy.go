package ethsign

import (
	"bytes"
	"math/big"
	"slices"

	"github.com/ethereum/go-ethereum/core/types"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

// Check applies key k's spending policy to u, all but the daily limit
// (which needs the ledger). Its errors name the rule that denied.
func Check(k *keyring.Key, u Unsigned) error {
	p := k.Eth
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
