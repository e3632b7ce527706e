package eth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/sigil-hsm/sigil/keyring"
)

// The table cache hands out copies whose maps are their own and whose
// entries are changed through own: changing one changes neither the
// cached table nor the next copy; a record someone else wrote (other
// bytes) is decoded, not answered from the cache; and it keeps at most
// maxTableBytes of records.
func TestTablesHandOutCopies(t *testing.T) {
	var c tables
	rec := &keyring.LedgerRecord{}
	tb := &nonceTable{Chains: map[string]*chainNonces{"1": {Highest: 3, History: true, Nonces: map[string]*nonceEntry{
		"3": {Signed: []*txFacts{{Hash: "0x03", Raw: []byte{1}}}, Pending: &claimRec{Token: "t", Facts: &txFacts{Hash: "0x04"}}}}}}}
	if err := c.write("k", tb, rec); err != nil {
		t.Fatal(err)
	}
	a, _ := c.read("k", rec)
	a.Chains["1"].Highest = 9
	e := a.Chains["1"].own("3")
	e.Signed[0], e.Pending = &txFacts{Hash: "changed"}, nil
	e.Signed = append(e.Signed, &txFacts{Hash: "0x05"})
	a.Chains["1"].Nonces["4"] = &nonceEntry{}
	b, _ := c.read("k", rec)
	if e := b.Chains["1"].Nonces["3"]; b.Chains["1"].Highest != 3 || len(e.Signed) != 1 || e.Signed[0].Raw == nil || e.Pending.Facts.Hash != "0x04" || b.Chains["1"].Nonces["4"] != nil {
		t.Fatalf("a copy's changes reached the cache: %+v", b.Chains["1"])
	}
	if !bytes.Equal(encodeTable(b, 0), rec.Extra) {
		t.Fatal("the cached table no longer encodes as the record it was written as")
	}
	other := &keyring.LedgerRecord{Extra: json.RawMessage(`{"chains":{"1":{"highest":7,"history":true,"nonces":{}}}}`)}
	if d, err := c.read("k", other); err != nil || d.Chains["1"].Highest != 7 {
		t.Fatalf("a record another replica wrote: %+v %v", d, err)
	}
	big := &nonceTable{Chains: map[string]*chainNonces{"1": {Nonces: map[string]*nonceEntry{"1": {Signed: []*txFacts{{Hash: strings.Repeat("a", 20000)}}}}}}}
	for i := range 1000 {
		c.write(string(rune(0x100+i)), big, &keyring.LedgerRecord{})
	}
	total := 0
	for _, d := range c.m {
		total += len(d.raw)
	}
	if total > maxTableBytes || total != c.bytes || len(c.m) < 100 {
		t.Fatalf("%d tables of %d bytes kept (counted %d)", len(c.m), total, c.bytes)
	}
}

// ledgerRun is one key's ledger record rewritten as the store does it,
// through a table cache.
type ledgerRun struct {
	tt     tables
	stored []byte
}

func (r *ledgerRun) rewrite(t *testing.T, fn func(*keyring.LedgerRecord) error) error {
	t.Helper()
	rec, err := keyring.DecodeLedger(r.stored)
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(rec); err != nil {
		return err
	}
	if r.stored, err = keyring.EncodeLedger(rec); err != nil {
		t.Fatal(err)
	}
	return nil
}

// Claims and settles through the cache, whose tables share the entries
// they did not change (and those entries' encodings), write the record
// byte for byte as the same steps do when every table is decoded anew:
// a shared entry changed in place, or an encoding kept past a change,
// would make the two differ. The steps are random: first transactions,
// retries, speed-ups, cancels, other transactions for a nonce taken,
// failed signatures, claims abandoned and taken over after their lease,
// nonces leaving the window.
func TestCachedTablesWriteWhatFreshOnesDo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cached, fresh := &ledgerRun{}, &ledgerRun{}
	self := common.HexToAddress("0x9999999999999999999999999999999999999999")
	spend := func(s []keyring.Spend) ([]keyring.Spend, string, error) { return s, "", nil }
	now := time.Unix(1_800_000_000, 0)
	type claimed struct{ chain, nonce uint64 }
	pending := map[claimed]string{} // → the token of the claim not settled yet
	for step := range 3000 {
		now = now.Add(time.Duration(rng.IntN(20)) * time.Second)
		n := uint64(step/8 + rng.IntN(12))
		to, value, fee := "0x3535353535353535353535353535353535353535", 1+rng.IntN(2), 2+rng.IntN(3)
		if rng.IntN(6) == 0 {
			to, value = self.Hex(), 0
		}
		u, err := ParseJSON(fmt.Appendf(nil, `{"chainId":"0x%x","nonce":"0x%x","to":"%s","value":"0x%x","gas":"0x5208","maxFeePerGas":"0x%x","maxPriorityFeePerGas":"0x1"}`,
			1+rng.IntN(2), n, to, value, fee))
		if err != nil {
			t.Fatal(err)
		}
		hash := types.LatestSignerForChainID(u.ChainID).Hash(u.Tx)
		token := fmt.Sprint("t", step)
		var outs [2]string
		for i, r := range []*ledgerRun{cached, fresh} {
			if r == fresh {
				r.tt = tables{} // nothing cached: every table decoded anew
			}
			r.rewrite(t, func(rec *keyring.LedgerRecord) error {
				raw, err := claim(rec, &r.tt, "k", u, hash, self, &Policy{}, token, now, spend)
				outs[i] = fmt.Sprintf("claim %x %v", raw, err)
				return err
			})
		}
		if outs[0] != outs[1] {
			t.Fatalf("step %d: cached %s, fresh %s", step, outs[0], outs[1])
		}
		if outs[0] == "claim  <nil>" {
			pending[claimed{u.ChainID.Uint64(), n}] = token
		}
		for m, tok := range pending {
			if rng.IntN(3) != 0 { // left for later, or for good: a claim abandoned, taken over after its lease
				continue
			}
			var raw []byte
			if rng.IntN(5) != 0 {
				raw = fmt.Appendf(nil, "signed %d %s", m.nonce, tok)
			}
			for _, r := range []*ledgerRun{cached, fresh} {
				if r == fresh {
					r.tt = tables{}
				}
				if err := r.rewrite(t, func(rec *keyring.LedgerRecord) error {
					return settle(rec, &r.tt, "k", new(big.Int).SetUint64(m.chain), m.nonce, tok, raw)
				}); err != nil {
					t.Fatal(err)
				}
			}
			delete(pending, m)
		}
		if !bytes.Equal(cached.stored, fresh.stored) {
			t.Fatalf("step %d: the cached run wrote other bytes than the fresh one", step)
		}
	}
	rec, _ := keyring.DecodeLedger(cached.stored)
	tb, err := readNonces(rec)
	if err != nil || len(tb.Chains) != 2 {
		t.Fatalf("the table at the end: %v %v", tb, err)
	}
	for id, c := range tb.Chains {
		signed := 0
		for _, e := range c.Nonces {
			signed += len(e.Signed)
		}
		if signed < 50 || !c.History {
			t.Fatalf("chain %s at the end: %d transactions signed, highest %d: the steps did not exercise the guard", id, signed, c.Highest)
		}
	}
}
