package eth

import (
	"bytes"
	"maps"
	"sync"

	"github.com/sigil-hsm/sigil/keyring"
)

// tables remembers, per key, the nonce table last read or written with
// the bytes it was read from or written as, so that a claim or settle
// whose ledger record holds those bytes (the common case: this replica
// wrote them) clones the table instead of decoding it again. Decoding
// was the largest part of a claim's time, and claims and settles run one
// at a time inside the store's update. Equal bytes decode to an equal
// table, so an entry is never wrong, only unused when another replica
// wrote the record since.
type tables struct {
	mu    sync.Mutex
	m     map[string]decodedTable // by key ID
	bytes int                     // of the raw records kept
}

type decodedTable struct {
	raw []byte
	t   *nonceTable // never changed once here
}

// maxTableBytes bounds what tables keeps, counted in the records' bytes
// (a decoded table takes a few times more): beyond it entries go until
// the new one fits. 4 MiB is some 180 keys whose records are full.
const maxTableBytes = 4 << 20

// read is readNonces through the cache: a table the caller may change.
func (c *tables) read(id string, rec *keyring.LedgerRecord) (*nonceTable, error) {
	c.mu.Lock()
	d, ok := c.m[id]
	c.mu.Unlock()
	if ok && bytes.Equal(d.raw, rec.Extra) {
		return d.t.clone(), nil
	}
	return readNonces(rec)
}

// write is t.write, remembering t (which the caller no longer changes).
func (c *tables) write(id string, t *nonceTable, rec *keyring.LedgerRecord) error {
	if err := t.write(rec); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]decodedTable{}
	}
	c.bytes -= len(c.m[id].raw)
	for k, d := range c.m {
		if c.bytes+len(rec.Extra) <= maxTableBytes {
			break
		}
		delete(c.m, k)
		c.bytes -= len(d.raw)
	}
	c.m[id] = decodedTable{raw: rec.Extra, t: t}
	c.bytes += len(rec.Extra)
	return nil
}

// clone is a copy of t whose chains and maps are its own and whose
// entries are t's: an entry is never changed in place (chainNonces.own
// copies the one a claim or settle changes), so cloning a table is
// copying its maps, not its transactions, and an unchanged entry keeps
// its encoding.
func (t *nonceTable) clone() *nonceTable {
	out := &nonceTable{Chains: make(map[string]*chainNonces, len(t.Chains))}
	for id, c := range t.Chains {
		out.Chains[id] = &chainNonces{Highest: c.Highest, History: c.History, Nonces: maps.Clone(c.Nonces)}
	}
	return out
}

func (f *txFacts) clone() *txFacts {
	if f == nil {
		return nil
	}
	c := *f
	return &c
}
