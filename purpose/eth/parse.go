package eth

import (
	"encoding/json"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rlp"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/strictjson"
)

// Size limits on client input.
const (
	MaxTxBytes   = 160 << 10 // a transaction as JSON or RLP
	MaxDataBytes = 128 << 10 // its input (call data)
)

// txFields are the members of an eth_signTransaction object.
var txFields = map[string]bool{
	"type": true, "chainId": true, "nonce": true, "to": true, "from": true, "gas": true,
	"gasPrice": true, "maxFeePerGas": true, "maxPriorityFeePerGas": true, "maxFeePerBlobGas": true,
	"value": true, "input": true, "data": true, "accessList": true, "blobVersionedHashes": true, "authorizationList": true,
}

// listFields are the members of each entry of a transaction's lists:
// go-ethereum drops any other member in silence, so Sigil refuses it (a
// client must not believe a constraint it sent was signed).
var listFields = map[string]map[string]bool{
	"accessList":        {"address": true, "storageKeys": true},
	"authorizationList": {"chainId": true, "address": true, "nonce": true, "yParity": true, "r": true, "s": true},
}

// signatureFields mark a transaction that is already signed.
var signatureFields = []string{"v", "r", "s", "yParity", "hash"}

// Unsigned is a parsed transaction to sign.
type Unsigned struct {
	Tx      *types.Transaction
	ChainID *big.Int
	From    *common.Address // the sender the client expects, if it named one
}

// ParseJSON parses an eth_signTransaction object. The type is inferred
// from the fields when absent; a chain ID is required for every type
// (legacy transactions are signed under EIP-155).
func ParseJSON(data []byte) (Unsigned, error) {
	obj, err := strictjson.Object("transaction", data, MaxTxBytes)
	if err != nil {
		return Unsigned{}, err
	}
	for _, f := range signatureFields {
		if _, ok := obj[f]; ok {
			return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: field %q: this transaction is already signed", f)
		}
	}
	for f := range obj {
		if !txFields[f] {
			return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: unknown field %q", f)
		}
	}
	if err := checkLists(obj); err != nil {
		return Unsigned{}, err
	}
	u := Unsigned{}
	if raw, ok := obj["from"]; ok {
		var from common.Address
		if err := json.Unmarshal(raw, &from); err != nil {
			return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: from: %v", err)
		}
		u.From = &from
	}
	if err := mergeData(obj); err != nil {
		return Unsigned{}, err
	}
	var chainID hexutil.Big
	raw, ok := obj["chainId"]
	if !ok {
		return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: chainId: missing (every transaction is signed for one chain)")
	}
	if err := json.Unmarshal(raw, &chainID); err != nil {
		return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: chainId: %v", err)
	}
	typ, err := txType(obj)
	if err != nil {
		return Unsigned{}, err
	}
	obj["type"] = json.RawMessage(`"` + hexutil.EncodeUint64(typ) + `"`)
	for _, f := range []string{"v", "r", "s"} { // go-ethereum's decoder wants a signature: a zero one
		obj[f] = json.RawMessage(`"0x0"`)
	}
	body := strictjson.Encode(obj)
	tx := new(types.Transaction)
	if err := tx.UnmarshalJSON(body); err != nil {
		return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: %v", err)
	}
	u.Tx, u.ChainID = tx, chainID.ToInt()
	return u, u.check()
}

// checkLists refuses members of list entries that go-ethereum would drop.
func checkLists(obj map[string]json.RawMessage) error {
	for list, fields := range listFields {
		raw, ok := obj[list]
		if !ok {
			continue
		}
		var entries []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &entries); err != nil {
			return errs.New(errs.InvalidArgument, "transaction: %s: a list of objects: %v", list, err)
		}
		for i, e := range entries {
			for f := range e {
				if !fields[f] {
					return errs.New(errs.InvalidArgument, "transaction: %s[%d]: unknown field %q", list, i, f)
				}
			}
		}
	}
	return nil
}

// mergeData accepts the call data as "input" or its older name "data".
func mergeData(obj map[string]json.RawMessage) error {
	data, hasData := obj["data"]
	input, hasInput := obj["input"]
	switch {
	case hasData && hasInput && string(data) != string(input):
		return errs.New(errs.InvalidArgument, "transaction: data and input differ")
	case hasData:
		obj["input"] = data
	case !hasInput:
		obj["input"] = json.RawMessage(`"0x"`)
	}
	delete(obj, "data")
	if _, ok := obj["value"]; !ok {
		obj["value"] = json.RawMessage(`"0x0"`)
	}
	return nil
}

// txType is the declared type, or the one the fields imply.
func txType(obj map[string]json.RawMessage) (uint64, error) {
	if raw, ok := obj["type"]; ok {
		var t hexutil.Uint64
		if err := json.Unmarshal(raw, &t); err != nil || t > types.SetCodeTxType {
			return 0, errs.New(errs.InvalidArgument, "transaction: type: %s is not a known transaction type (0x0 to 0x4)", raw)
		}
		return uint64(t), nil
	}
	has := func(f string) bool { _, ok := obj[f]; return ok }
	switch {
	case has("authorizationList"):
		return types.SetCodeTxType, nil
	case has("blobVersionedHashes"):
		return types.BlobTxType, nil
	case has("maxFeePerGas"):
		return types.DynamicFeeTxType, nil
	case has("accessList"):
		return types.AccessListTxType, nil
	}
	return types.LegacyTxType, nil
}

// ParseRLP parses an unsigned transaction in its signing encoding: for
// legacy, rlp([nonce, gasPrice, gas, to, value, data, chainId, 0, 0])
// (EIP-155); for typed transactions, type ‖ rlp([fields without v, r, s]).
// go-ethereum decodes only signed encodings, so the three signature
// values are appended as zero before it decodes.
func ParseRLP(b []byte) (Unsigned, error) {
	if len(b) == 0 || len(b) > MaxTxBytes {
		return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: RLP of %d bytes (1 to %d)", len(b), MaxTxBytes)
	}
	var elems []rlp.RawValue
	if b[0] >= 0xc0 {
		if err := rlp.DecodeBytes(b, &elems); err != nil {
			return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: malformed RLP: %v", err)
		}
		if len(elems) != 9 {
			return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: a legacy transaction must be the EIP-155 list of 9 items, with its chain ID, not %d", len(elems))
		}
		if !isZero(elems[7]) || !isZero(elems[8]) {
			return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: this transaction is already signed")
		}
		tx := new(types.Transaction)
		if err := tx.UnmarshalBinary(b); err != nil {
			return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: %v", err)
		}
		v, _, _ := tx.RawSignatureValues() // in the signing encoding, v is the chain ID
		u := Unsigned{Tx: tx, ChainID: v}
		return u, u.check()
	}
	if b[0] < types.AccessListTxType || b[0] > types.SetCodeTxType {
		return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: unknown type 0x%02x", b[0])
	}
	if err := rlp.DecodeBytes(b[1:], &elems); err != nil {
		return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: malformed RLP: %v", err)
	}
	zero := rlp.RawValue{0x80}
	withSig, err := rlp.EncodeToBytes(append(elems, zero, zero, zero))
	if err != nil {
		return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: %v", err)
	}
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(append([]byte{b[0]}, withSig...)); err != nil {
		if new(types.Transaction).UnmarshalBinary(b) == nil {
			return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: this transaction is already signed")
		}
		return Unsigned{}, errs.New(errs.InvalidArgument, "transaction: %v", err)
	}
	u := Unsigned{Tx: tx, ChainID: tx.ChainId()}
	return u, u.check()
}

func isZero(v rlp.RawValue) bool { return len(v) == 1 && v[0] == 0x80 }

// check applies what go-ethereum's decoders leave to the caller. Both
// parsers end here, so a transaction is held to the same bounds however
// it came: go-ethereum's JSON decoding refuses quantities over 256 bits,
// but its RLP decoding of legacy and access-list transactions does not.
func (u Unsigned) check() error {
	if err := checkQuantities(u.Tx); err != nil {
		return err
	}
	switch {
	case u.ChainID == nil || u.ChainID.Sign() <= 0 || !u.ChainID.IsUint64():
		return errs.New(errs.InvalidArgument, "transaction: chainId: must be a positive 64-bit chain ID")
	case u.Tx.Type() != types.LegacyTxType && u.Tx.ChainId().Cmp(u.ChainID) != 0:
		return errs.New(errs.InvalidArgument, "transaction: chainId mismatch")
	case len(u.Tx.Data()) > MaxDataBytes:
		return errs.New(errs.InvalidArgument, "transaction: input: %d bytes, at most %d", len(u.Tx.Data()), MaxDataBytes)
	}
	return nil
}

// checkQuantities refuses a quantity of more than 256 bits: the EVM's word,
// and the bound eth_signTransaction's JSON puts on every quantity.
func checkQuantities(tx *types.Transaction) error {
	for _, q := range []struct {
		name string
		v    *big.Int
	}{
		{"value", tx.Value()}, {"gasPrice/maxFeePerGas", tx.GasFeeCap()},
		{"maxPriorityFeePerGas", tx.GasTipCap()}, {"maxFeePerBlobGas", tx.BlobGasFeeCap()},
	} {
		if q.v != nil && q.v.BitLen() > 256 {
			return errs.New(errs.InvalidArgument, "transaction: %s: more than 256 bits", q.name)
		}
	}
	return nil
}
