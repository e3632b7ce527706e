package eth

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/keyring"
)

// sampleTable is a table with every kind of field set and unset: two
// chains, entries with several transactions (one fact missing its raw
// bytes), a pending claim with and without facts, a reservation.
func sampleTable() *nonceTable {
	at := time.Date(2026, 12, 6, 17, 30, 0, 123456789, time.UTC)
	t := &nonceTable{Chains: map[string]*chainNonces{
		"1":        {Highest: 70, History: true, Nonces: map[string]*nonceEntry{}},
		"11155111": {Nonces: map[string]*nonceEntry{"0": {Pending: &claimRec{Token: "tok", At: at, Facts: &txFacts{Hash: "0x0"}}}}},
	}}
	for n := range 64 {
		e := &nonceEntry{Signed: []*txFacts{{Hash: "0x" + strconv.Itoa(n), To: "0x3535353535353535353535353535353535353535", Value: "1000000000000000000",
			Data: "e3b0c442", FeeCap: "2000000000", TipCap: "1000000000", Raw: []byte{0x02, byte(n)}}}}
		if n%3 == 0 {
			e.Signed = append(e.Signed, &txFacts{Hash: "0xreplacement", Value: "0"})
		}
		if n == 7 {
			e.Pending, e.Reservation = &claimRec{Token: "t7", At: at, Facts: &txFacts{Hash: "0xpending"}}, "r-7"
		}
		t.Chains["1"].Nonces[strconv.Itoa(n+7)] = e
	}
	return t
}

// A table reads back as written from its stored form, and from the JSON
// form earlier releases wrote; the stored form is the smaller.
func TestNonceTableRoundTrip(t *testing.T) {
	tb := sampleTable()
	stored := encodeTable(tb, 0)
	got, err := readNonces(&keyring.LedgerRecord{Extra: stored})
	if err != nil || !reflect.DeepEqual(got, forgetEncodings(tb)) {
		t.Fatalf("the stored form reads back as %+v, %v", got, err)
	}
	old, _ := json.Marshal(tb)
	fromJSON, err := readNonces(&keyring.LedgerRecord{Extra: old})
	if err != nil || !bytes.Equal(encodeTable(fromJSON, 0), stored) {
		t.Fatalf("the JSON form reads as another table: %v", err)
	}
	if len(stored) >= len(old) {
		t.Errorf("stored form %d bytes, JSON %d", len(stored), len(old))
	}
	if empty, err := readNonces(&keyring.LedgerRecord{}); err != nil || len(empty.Chains) != 0 {
		t.Fatalf("no record: %+v %v", empty, err)
	}
}

// A stored table cut short anywhere, or with a byte added, or a flag
// that is neither 0 nor 1, is refused, never read as a smaller table.
func TestNonceTableDamageIsRefused(t *testing.T) {
	stored := encodeTable(sampleTable(), 0)
	for i := len(tableMagic); i < len(stored); i++ {
		if _, err := decodeTable(stored[:i]); err == nil {
			t.Fatalf("cut to %d of %d bytes: read", i, len(stored))
		}
	}
	if _, err := decodeTable(append(bytes.Clone(stored), 0)); err == nil {
		t.Fatal("a trailing byte: read")
	}
	if _, err := readNonces(&keyring.LedgerRecord{Extra: append(bytes.Clone(tableMagic), 0xff, 0xff, 0xff, 0xff, 0x0f)}); err == nil {
		t.Fatal("a count past the record: read")
	}
}

// A stored table whose chains or nonces repeat, are out of order or are
// not canonical decimals is refused: a later copy would hide an earlier
// one, a nonce signed would read as never signed. A table holding no
// facts where facts belong (an earlier release's damaged record) is
// written with empty facts, never read back as nil.
func TestNonceTableRefusesWhatHidesANonce(t *testing.T) {
	entry := func(b []byte, nonce string) []byte {
		b = appendString(b, nonce)
		b = append(b, 1) // one signed transaction
		b = appendFactsPacked(b, &txFacts{Hash: "0x" + nonce})
		return appendString(append(b, 0), "") // no claim, no reservation
	}
	chain := func(b []byte, id string, nonces ...string) []byte {
		b = append(appendString(b, id), 9, 1, byte(len(nonces))) // highest 9, history
		for _, n := range nonces {
			b = entry(b, n)
		}
		return b
	}
	table := func(chains ...[]byte) []byte {
		b := append(bytes.Clone(tableMagic), byte(len(chains)))
		for _, c := range chains {
			b = append(b, c...)
		}
		return b
	}
	if _, err := decodeTable(table(chain(nil, "1", "5", "6"), chain(nil, "10", "7"))); err != nil {
		t.Fatalf("a well-formed table: %v", err)
	}
	for name, b := range map[string][]byte{
		"a nonce twice":           table(chain(nil, "1", "5", "5")),
		"nonces out of order":     table(chain(nil, "1", "6", "5")),
		"a chain twice":           table(chain(nil, "1", "5"), chain(nil, "1")),
		"chains out of order":     table(chain(nil, "2", "5"), chain(nil, "1", "6")),
		"a nonce with a zero":     table(chain(nil, "1", "05")),
		"a nonce not a number":    table(chain(nil, "1", "5x")),
		"a chain ID with a sign":  table(chain(nil, "+1", "5")),
		"an empty chain ID":       table(chain(nil, "", "5")),
		"a nonce that is nothing": table(chain(nil, "1", "")),
	} {
		if _, err := decodeTable(b); err == nil {
			t.Errorf("%s: read", name)
		}
	}
	tb := &nonceTable{Chains: map[string]*chainNonces{"1": {Nonces: map[string]*nonceEntry{
		"3": {Signed: []*txFacts{nil, {Hash: "0x3"}}, Pending: &claimRec{Token: "t"}}}}}}
	got, err := decodeTable(encodeTable(tb, 0))
	if err != nil {
		t.Fatal(err)
	}
	if e := got.Chains["1"].Nonces["3"]; len(e.Signed) != 1 || e.Signed[0].Hash != "0x3" || e.Pending.Facts == nil {
		t.Fatalf("facts of nothing read back as %+v", e)
	}
}

// Whatever bytes follow the magic, decodeTable neither panics nor reads
// what it cannot write back: a table it reads encodes to one that reads
// as the same.
func FuzzDecodeTable(f *testing.F) {
	f.Add(encodeTable(sampleTable(), 0))
	small := sampleTable().Chains["1"].Nonces["8"] // a small seed mutates fast
	f.Add(encodeTable(&nonceTable{Chains: map[string]*chainNonces{"1": {Highest: 1, History: true, Nonces: map[string]*nonceEntry{"1": small}}}}, 0))
	if golden, err := os.ReadFile("testdata/nonce-table-v1.hex"); err == nil {
		v1, _ := hex.DecodeString(strings.TrimSpace(string(golden)))
		f.Add(v1)
	}
	f.Add(append(bytes.Clone(tableMagic), 1, 1, '1', 5, 1, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := decodeTable(data)
		if err != nil {
			return
		}
		for _, c := range tb.Chains {
			for n, e := range c.Nonces {
				if slices.Contains(e.Signed, nil) || e.Pending != nil && e.Pending.Facts == nil {
					t.Fatalf("%x reads with no facts for nonce %s", data, n)
				}
			}
		}
		again, err := decodeTable(encodeTable(tb, 0))
		if err != nil || !reflect.DeepEqual(again, forgetEncodings(tb)) {
			t.Fatalf("%x reads as a table that does not survive its own encoding: %v", data, err)
		}
	})
}

// forgetEncodings drops the encodings encodeTable kept in tb's entries,
// so that tb compares equal to a table decoded from them.
func forgetEncodings(tb *nonceTable) *nonceTable {
	for _, c := range tb.Chains {
		for _, e := range c.Nonces {
			e.enc = nil
		}
	}
	return tb
}

// A record in the JSON form earlier releases wrote with a null where a
// transaction, an entry or a chain belongs is refused, not read as a
// nonce free to sign (nor a panic in the claim).
func TestNonceTableJSONWithNullsIsRefused(t *testing.T) {
	for _, rec := range []string{
		`{"chains":{"1":{"highest":3,"history":true,"nonces":{"3":{"signed":[null]}}}}}`,
		`{"chains":{"1":{"highest":3,"history":true,"nonces":{"3":null}}}}`,
		`{"chains":{"1":null}}`,
		`{"chains":{"1":{"highest":3,"history":true,"nonces":{"3":{"pending":{"token":"t","at":"2026-12-06T00:00:00Z"}}}}}}`,
	} {
		if tb, err := readNonces(&keyring.LedgerRecord{Extra: []byte(rec)}); err == nil {
			t.Errorf("%s read as %+v", rec, tb)
		}
	}
}

// A table stored in version 1 (facts as text, as the previous release
// wrote it: testdata/nonce-table-v1.hex is sampleTable in that form)
// reads as the table, and is written back in version 2, the smaller.
func TestNonceTableVersion1StillReads(t *testing.T) {
	golden, err := os.ReadFile("testdata/nonce-table-v1.hex")
	if err != nil {
		t.Fatal(err)
	}
	v1, err := hex.DecodeString(strings.TrimSpace(string(golden)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := readNonces(&keyring.LedgerRecord{Extra: v1})
	if err != nil || !reflect.DeepEqual(got, sampleTable()) {
		t.Fatalf("version 1 reads as %+v, %v", got, err)
	}
	v2 := encodeTable(got, 0)
	if !bytes.HasPrefix(v2, tableMagic) || len(v2) >= len(v1) {
		t.Fatalf("written back as %x (%d bytes, version 1 %d)", v2[:4], len(v2), len(v1))
	}
}

// Every fact comes back as the text it was, whichever form it packs in:
// the forms the guard writes (a checksummed address, a hash, the call
// data's digest, decimals) and anything else (reconciled hashes, an
// address not checksummed, hex in capitals, leading zeros, nothing).
func TestPackedFactsComeBackAsText(t *testing.T) {
	texts := []string{
		"", "0", "1", "10", "1000000000000000000", "0x", "0x0", "0x00", "0xabc", "0xABCD", "00", "0012", "12",
		"0x52908400098527886E0F7030069857D2E4169EE7", "0x52908400098527886e0f7030069857d2e4169ee7", "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
		"0x3535353535353535353535353535353535353535", "0xde709f2102306220921060314715629080e2fb77", "0x" + strings.Repeat("ab", 32),
		strings.Repeat("e3b0c442", 8), "reconciled:0x" + strings.Repeat("1f", 32), "reconciled:in-flight-at-backup", "héllo", "-5", "+5",
		new(big.Int).Lsh(big.NewInt(1), 255).String(),
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = "0123456789abcdefABCDEFx"[rng.IntN(23)]
		}
		texts = append(texts, string(b), "0x"+string(b))
	}
	for _, s := range texts {
		r := tableReader{b: appendPacked(nil, s)}
		if got := r.packed(); got != s || r.err != nil || len(r.b) != 0 {
			t.Fatalf("%q packed comes back as %q (%v, %d bytes left)", s, got, r.err, len(r.b))
		}
	}
	if n := len(appendPacked(nil, "0x"+strings.Repeat("ab", 32))); n != 34 {
		t.Errorf("a hash packs in %d bytes, want 34", n)
	}
}

// Whatever the text, packed it comes back as it was.
func FuzzPackedFact(f *testing.F) {
	f.Add("0x52908400098527886E0F7030069857D2E4169EE7")
	f.Add("1000000000000000000")
	f.Fuzz(func(t *testing.T, s string) {
		r := tableReader{b: appendPacked(nil, s)}
		if got := r.packed(); got != s || r.err != nil || len(r.b) != 0 {
			t.Fatalf("%q packed comes back as %q (%v)", s, got, r.err)
		}
	})
}

// A fact in a form appendPacked does not write is refused: a decimal
// with a leading zero byte or past 2^256, text that packs, an empty hex.
func TestPackedFactsHaveOneForm(t *testing.T) {
	for name, b := range map[string][]byte{
		"a leading zero byte":  appendString([]byte{packedDecimal}, "\x00\x01"),
		"a decimal past 2^256": appendString([]byte{packedDecimal}, strings.Repeat("\xff", 33)),
		"text that packs":      appendString([]byte{packedText}, "1000"),
		"an empty bare hex":    appendString([]byte{packedHex}, ""),
		"an unknown kind":      appendString([]byte{9}, "x"),
		"an address cut short": append([]byte{packedAddress}, 1, 2, 3),
	} {
		r := tableReader{b: b}
		if s := r.packed(); r.err == nil {
			t.Errorf("%s: read as %q", name, s)
		}
	}
	for _, s := range []string{strings.Repeat("9", 77), strings.Repeat("9", 78), new(big.Int).Lsh(big.NewInt(1), 256).String()} {
		r := tableReader{b: appendPacked(nil, s)}
		if got := r.packed(); got != s || r.err != nil {
			t.Errorf("%s: comes back as %q (%v)", s, got, r.err)
		}
	}
}
