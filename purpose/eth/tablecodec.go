package eth

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"
)

// tableMagic begins a nonce table's stored form, version 2 (facts
// packed, see packed.go); version 1 (facts as text, tableMagicV1) and the
// JSON form of earlier releases (it begins with '{') are still read.
var (
	tableMagic   = []byte{0, 'N', 'T', 2}
	tableMagicV1 = []byte{0, 'N', 'T', 1}
)

// encodeTable is t's stored form: tableMagic, then per chain (in order
// of ID, as strings) its ID, highest nonce, history flag and entries (in
// order of nonce, as strings), each a list of its signed transactions'
// facts (packed, see packed.go), its pending claim, and its reservation;
// strings and byte strings length-prefixed, numbers as varints. A table
// is rewritten by every claim and settle,
// one at a time inside the store's update: written out by hand, into a
// buffer of the size it had (sizeHint), it costs a fraction of
// encoding/json's reflection (the largest part of a claim's time), and
// reads back without a JSON scan.
func encodeTable(t *nonceTable, sizeHint int) []byte {
	b := append(make([]byte, 0, sizeHint+512), tableMagic...)
	b = binary.AppendUvarint(b, uint64(len(t.Chains)))
	for _, id := range slices.Sorted(maps.Keys(t.Chains)) {
		c := t.Chains[id]
		b = appendString(b, id)
		b = binary.AppendUvarint(b, c.Highest)
		b = appendBool(b, c.History)
		b = binary.AppendUvarint(b, uint64(len(c.Nonces)))
		for _, n := range slices.Sorted(maps.Keys(c.Nonces)) {
			e := c.Nonces[n]
			if e.enc == nil {
				e.enc = appendEntry(nil, n, e)
			}
			b = append(b, e.enc...)
		}
	}
	return b
}

// appendEntry is nonce n's entry e.
func appendEntry(b []byte, n string, e *nonceEntry) []byte {
	b = appendString(b, n)
	signed := slices.DeleteFunc(slices.Clone(e.Signed), func(f *txFacts) bool { return f == nil })
	b = binary.AppendUvarint(b, uint64(len(signed)))
	for _, f := range signed {
		b = appendFactsPacked(b, f)
	}
	b = appendBool(b, e.Pending != nil)
	if p := e.Pending; p != nil {
		b = appendString(b, p.Token)
		b = binary.AppendVarint(b, p.At.UnixNano())
		b = appendFactsPacked(b, orNone(p.Facts))
	}
	return appendString(b, e.Reservation)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// orNone is f, or, for a claim with none (in a record an earlier release
// wrote badly), facts of nothing: never read back as nil.
func orNone(f *txFacts) *txFacts {
	if f == nil {
		return &txFacts{}
	}
	return f
}

var errTable = errors.New("malformed nonce table")

// decodeTable reads encodeTable's form, refusing anything else: a length
// or count past the bytes left, a flag other than 0 or 1, a chain ID or
// nonce that is not a canonical decimal or not after the one before it
// (a damaged or forged record must not read as one with a nonce left
// out, which would let the nonce be signed again), trailing bytes.
func decodeTable(data []byte) (*nonceTable, error) {
	packed := bytes.HasPrefix(data, tableMagic)
	if !packed && !bytes.HasPrefix(data, tableMagicV1) {
		return nil, errTable
	}
	r := tableReader{b: data[len(tableMagic):], packedFacts: packed}
	t := &nonceTable{Chains: map[string]*chainNonces{}}
	lastID := ""
	for i := range r.count() {
		id := r.decimal(i > 0, lastID)
		lastID = id
		c := &chainNonces{Highest: r.uvarint(), History: r.bool(), Nonces: map[string]*nonceEntry{}}
		lastNonce := ""
		for j := range r.count() {
			n := r.decimal(j > 0, lastNonce)
			lastNonce = n
			e := &nonceEntry{}
			if k := r.count(); k > 0 {
				e.Signed = make([]*txFacts, k)
				for i := range e.Signed {
					e.Signed[i] = r.facts()
				}
			}
			if r.bool() {
				e.Pending = &claimRec{Token: r.string(), At: time.Unix(0, r.varint()).UTC(), Facts: r.facts()}
			}
			e.Reservation = r.string()
			c.Nonces[n] = e
		}
		t.Chains[id] = c
	}
	if r.err != nil || len(r.b) > 0 {
		return nil, errTable
	}
	return t, nil
}

// tableReader reads a stored table; after its first error it reads
// zeros and keeps the error.
type tableReader struct {
	b           []byte
	err         error
	packedFacts bool // version 2
}

func (r *tableReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *tableReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count is a number of items to read, each at least a byte: never more
// than the bytes left, so a damaged count cannot ask for a huge slice.
func (r *tableReader) count() int {
	v := r.uvarint()
	if v > uint64(len(r.b)) {
		r.fail()
		return 0
	}
	return int(v)
}

func (r *tableReader) string() string {
	n := r.count()
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *tableReader) bool() bool {
	if len(r.b) == 0 || r.b[0] > 1 {
		r.fail()
		return false
	}
	v := r.b[0] == 1
	r.b = r.b[1:]
	return v
}

// decimal reads a canonical unsigned decimal (digits only, no leading
// zero, at most 78: a chain ID is up to 2^256) that, if after, sorts
// after last.
func (r *tableReader) decimal(after bool, last string) string {
	s := r.string()
	if s == "" || len(s) > 78 || s != "0" && s[0] == '0' || strings.ContainsFunc(s, func(c rune) bool { return c < '0' || c > '9' }) || after && s <= last {
		r.fail()
	}
	return s
}

func (r *tableReader) facts() *txFacts {
	field := r.string
	if r.packedFacts {
		field = r.packed
	}
	f := &txFacts{Hash: field(), To: field(), Value: field(), Data: field(), FeeCap: field(), TipCap: field()}
	if raw := r.string(); raw != "" {
		f.Raw = []byte(raw)
	}
	return f
}

func (r *tableReader) fail() {
	if r.err == nil {
		r.err = errTable
	}
	r.b = nil
}
