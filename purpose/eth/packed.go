package eth

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math/big"
	"strings"

	"github.com/ethereum/go-ethereum/common"
)

// How a transaction's fact is packed in a stored table (version 2): as
// the bytes its text spells when the text is one of the forms the guard
// writes (a checksummed address, 0x-hex, bare hex, a decimal), else as
// the text. Every fact of every entry is rewritten with each claim and
// settle of its key, so half the bytes is half of what each store
// transaction writes; a fact packs only when its text comes back from
// the bytes exactly.
const (
	packedText = iota
	packedAddress
	packedHex0x
	packedHex
	packedDecimal
)

// appendPacked is s packed.
func appendPacked(b []byte, s string) []byte {
	switch {
	case len(s) == 42 && strings.HasPrefix(s, "0x") && common.IsHexAddress(s) && common.HexToAddress(s).Hex() == s:
		a := common.HexToAddress(s)
		return append(append(b, packedAddress), a[:]...)
	case strings.HasPrefix(s, "0x") && isLowerHex(s[2:]):
		raw, _ := hex.DecodeString(s[2:])
		return appendString(append(b, packedHex0x), string(raw))
	case isDecimal(s) && len(s) <= 77: // below 10^77 < 2^256: every amount the guard writes
		n, _ := new(big.Int).SetString(s, 10)
		return appendString(append(b, packedDecimal), string(n.Bytes()))
	case s != "" && isLowerHex(s):
		raw, _ := hex.DecodeString(s)
		return appendString(append(b, packedHex), string(raw))
	}
	return appendString(append(b, packedText), s)
}

// isLowerHex: an even number of lowercase hex digits.
func isLowerHex(s string) bool {
	return len(s)%2 == 0 && !strings.ContainsFunc(s, func(c rune) bool { return (c < '0' || c > '9') && (c < 'a' || c > 'f') })
}

// isDecimal: a decimal as big.Int writes it (no sign, no leading zero).
func isDecimal(s string) bool {
	return s != "" && (s == "0" || s[0] != '0') && !strings.ContainsFunc(s, func(c rune) bool { return c < '0' || c > '9' })
}

// packed reads what appendPacked wrote, and only that: a fact in any
// other form (a decimal with a leading zero byte, text that packs) is
// refused, so a table reads from one form only.
func (r *tableReader) packed() string {
	start := r.b
	s := r.unpack()
	if r.err == nil && !bytes.Equal(appendPacked(nil, s), start[:len(start)-len(r.b)]) {
		r.fail()
	}
	return s
}

func (r *tableReader) unpack() string {
	if len(r.b) == 0 {
		r.fail()
		return ""
	}
	kind := r.b[0]
	r.b = r.b[1:]
	switch kind {
	case packedAddress:
		if len(r.b) < common.AddressLength {
			r.fail()
			return ""
		}
		a := common.BytesToAddress(r.b[:common.AddressLength])
		r.b = r.b[common.AddressLength:]
		return a.Hex()
	case packedHex0x:
		return "0x" + hex.EncodeToString([]byte(r.string()))
	case packedHex:
		return hex.EncodeToString([]byte(r.string()))
	case packedDecimal:
		n := r.string()
		if len(n) > 32 { // more than appendPacked writes: refused before the costly conversion
			r.fail()
			return ""
		}
		return new(big.Int).SetBytes([]byte(n)).String()
	case packedText:
		return r.string()
	}
	r.fail()
	return ""
}

// appendFactsPacked writes f: its facts packed, then its signed bytes.
func appendFactsPacked(b []byte, f *txFacts) []byte {
	for _, s := range []string{f.Hash, f.To, f.Value, f.Data, f.FeeCap, f.TipCap} {
		b = appendPacked(b, s)
	}
	return append(binary.AppendUvarint(b, uint64(len(f.Raw))), f.Raw...)
}
