package eth

import (
	"fmt"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/sigil-hsm/sigil/keyring"
)

// BenchmarkClaimSettle is one transaction's two rewrites of a key's
// ledger record whose nonce table is full (NonceWindow nonces, the
// newest RawWindow with their signed bytes), as the store runs them:
// the record decoded, claimed or settled, and encoded again.
func BenchmarkClaimSettle(b *testing.B) {
	var tt tables
	stored, err := keyring.EncodeLedger(&keyring.LedgerRecord{})
	if err != nil {
		b.Fatal(err)
	}
	self := common.HexToAddress("0x9999999999999999999999999999999999999999")
	p, now := &Policy{}, time.Unix(1_800_000_000, 0)
	raw := make([]byte, 115)
	rewrite := func(fn func(*keyring.LedgerRecord) error) {
		rec, err := keyring.DecodeLedger(stored)
		if err != nil {
			b.Fatal(err)
		}
		if err := fn(rec); err != nil {
			b.Fatal(err)
		}
		if stored, err = keyring.EncodeLedger(rec); err != nil {
			b.Fatal(err)
		}
	}
	step := func(n uint64) {
		u, err := ParseJSON(fmt.Appendf(nil, `{"chainId":"0x1","nonce":"0x%x","to":"0x3535353535353535353535353535353535353535","value":"0xde0b6b3a7640000","gas":"0x5208","maxFeePerGas":"0x77359400","maxPriorityFeePerGas":"0x3b9aca00"}`, n))
		if err != nil {
			b.Fatal(err)
		}
		hash := types.LatestSignerForChainID(u.ChainID).Hash(u.Tx)
		rewrite(func(rec *keyring.LedgerRecord) error {
			_, err := claim(rec, &tt, "k", u, hash, self, p, "token", now, func(s []keyring.Spend) ([]keyring.Spend, string, error) { return s, "", nil })
			return err
		})
		rewrite(func(rec *keyring.LedgerRecord) error { return settle(rec, &tt, "k", u.ChainID, n, "token", raw) })
	}
	for n := range uint64(NonceWindow + 1) {
		step(n)
	}
	b.Logf("record: %d bytes", len(stored))
	b.ResetTimer()
	for i := range b.N {
		step(uint64(NonceWindow + 1 + i))
	}
}
