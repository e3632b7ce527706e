package eth

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/keyring"
)

// The table cache hands out copies: changing one changes neither the
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
	a.Chains["1"].Nonces["3"].Signed[0].Raw = nil
	a.Chains["1"].Nonces["3"].Pending.Facts.Hash = "changed"
	a.Chains["1"].Nonces["4"] = &nonceEntry{}
	b, _ := c.read("k", rec)
	if e := b.Chains["1"].Nonces["3"]; b.Chains["1"].Highest != 3 || e.Signed[0].Raw == nil || e.Pending.Facts.Hash != "0x04" || b.Chains["1"].Nonces["4"] != nil {
		t.Fatalf("a copy's changes reached the cache: %+v", b.Chains["1"])
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
