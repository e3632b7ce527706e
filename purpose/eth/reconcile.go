package eth

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"sort"
	"strconv"
	"time"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

// Evidence is what is known of a restored key's transactions since its
// backup: those its audit records name, by chain, and the node's count
// of them (eth_getTransactionCount, "pending") on its chain.
type Evidence struct {
	Signed    map[string]map[uint64]string // chain → nonce → transaction hash
	NodeChain string                       // the chain the node is on; "" without a node
	NodeCount uint64
}

// ReconcileMargin is how far before the backup's time audit records are
// read: a signature under way while the backup was taken (its record is
// timed at its start; replicas' clocks differ) counts too. Marking a
// nonce the ledger already has changes nothing.
const ReconcileMargin = 10 * time.Minute

// SignedSince reads the records of audit log r for key id (as the log
// names it: NS/ID outside root) that signed a transaction since the
// backup taken at since (less ReconcileMargin), into e.
func (e *Evidence) SignedSince(r io.Reader, id string, since time.Time) error {
	if e.Signed == nil {
		e.Signed = map[string]map[uint64]string{}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec audit.Record // a line is a record, with its chain fields beside
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue // a torn line
		}
		if rec.KeyID != id || rec.Operation != string(OpSignTx) || rec.Outcome != "allowed" || rec.Time.Before(since.Add(-ReconcileMargin)) {
			continue
		}
		chain, hash := rec.Details["chain"], rec.Details["tx_hash"]
		n, err := strconv.ParseUint(rec.Details["nonce"], 10, 64)
		if chain == "" || hash == "" || err != nil {
			continue // a record from before the audit log noted transactions
		}
		if e.Signed[chain] == nil {
			e.Signed[chain] = map[uint64]string{}
		}
		e.Signed[chain][n] = hash
	}
	return sc.Err()
}

// ChainFound is what reconciling found on one chain.
type ChainFound struct {
	Chain                    string
	Before, After            uint64 // the highest nonce the ledger had, and has
	HadHistory               bool
	FromAudit, FromNode      int // nonces the audit log and the node accounted for past Before
	UnknownTransactionHashes int // nonces taken for which no transaction hash is known
}

// Reconcile brings a fenced ledger up to what e shows and lifts the
// fence: every nonce the audit log or the node accounts for is marked
// signed (by its transaction hash when the log names it; by nothing that
// any new transaction could match otherwise), so none can be signed
// again for another transaction; and the daily limit's window is counted
// as fully spent (the values signed since the backup are not known). It
// refuses without evidence, leaving the fence.
func Reconcile(rec *keyring.LedgerRecord, e Evidence, limit *big.Int, now time.Time) ([]ChainFound, error) {
	if rec.Fence == nil {
		return nil, errs.New(errs.FailedPrecondition, "this key's ledger is not fenced: nothing to reconcile")
	}
	if len(e.Signed) == 0 && e.NodeChain == "" {
		return nil, errs.New(errs.FailedPrecondition, "no evidence: give the audit logs since the backup (--audit FILE…) and/or a node (--upstream URL); without either the key stays fenced")
	}
	t, err := readNonces(rec)
	if err != nil {
		return nil, err
	}
	if err := covered(t, e); err != nil {
		return nil, err
	}
	chains := map[string]bool{e.NodeChain: e.NodeChain != ""}
	for c := range e.Signed {
		chains[c] = true
	}
	var out []ChainFound
	for chain, ok := range chains {
		if !ok {
			continue
		}
		id, good := new(big.Int).SetString(chain, 10)
		if !good {
			return nil, errs.New(errs.InvalidArgument, "chain %q", chain)
		}
		c := t.chain(id)
		f := ChainFound{Chain: chain, Before: c.Highest, HadHistory: c.History}
		// A claim the backup caught in flight may have been signed since:
		// its nonce is taken.
		for key, en := range c.Nonces {
			if en.Pending != nil {
				en = c.own(key)
				en.Signed, en.Pending = append(en.Signed, &txFacts{Hash: "reconciled:in-flight-at-backup"}), nil
			}
		}
		mark := func(n uint64, hash string) bool {
			key := strconv.FormatUint(n, 10)
			if e := c.Nonces[key]; e != nil && len(e.Signed) > 0 {
				return false // the ledger knows it
			}
			facts := &txFacts{Hash: "reconciled:" + hash} // no signing hash: nothing new matches it
			c.Nonces[key] = &nonceEntry{Signed: []*txFacts{facts}}
			if !c.History || n > c.Highest {
				c.Highest, c.History = n, true
			}
			return true
		}
		for n, hash := range e.Signed[chain] {
			if mark(n, hash) {
				f.FromAudit++
			}
		}
		if chain == e.NodeChain && e.NodeCount > 0 {
			// Only the window's nonces need marking: those further below
			// are refused as out of reach anyway.
			low := uint64(0)
			if e.NodeCount > NonceWindow {
				low = e.NodeCount - NonceWindow
			}
			for n := low; n < e.NodeCount; n++ {
				if mark(n, "unknown") {
					f.FromNode++
					f.UnknownTransactionHashes++
				}
			}
		}
		c.prune()
		f.After = c.Highest
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Chain < out[j].Chain })
	if err := t.write(rec); err != nil {
		return nil, err
	}
	if limit != nil && limit.Sign() > 0 {
		var a keyring.Amount
		a.Set(limit)
		rec.Spends = append(rec.Spends, keyring.Spend{ID: "reconciled-" + now.UTC().Format(time.RFC3339), At: now, Amount: a})
	}
	rec.Fence = nil
	return out, nil
}

// covered refuses evidence that leaves a chain the key signed on
// unaccounted for: without the audit logs, the node must be on every
// such chain (one node is on one), and count at least what the ledger
// has (a node behind, syncing or on another network counts less).
func covered(t *nonceTable, e Evidence) error {
	if len(e.Signed) > 0 {
		return nil // the audit logs name every chain's transactions
	}
	for chain, c := range t.Chains {
		if !c.History {
			continue
		}
		if chain != e.NodeChain {
			return errs.New(errs.FailedPrecondition, "the key signed on chain %s and the node is on chain %s: give the audit logs, or reconcile with a node on each chain", chain, e.NodeChain)
		}
		if e.NodeCount < c.Highest+1 {
			return errs.New(errs.FailedPrecondition, "the node counts %d transactions but the ledger has nonce %d on chain %s: a node behind, syncing or on another network; the key stays fenced", e.NodeCount, c.Highest, chain)
		}
	}
	return nil
}

// String says what reconciling found on a chain.
func (f ChainFound) String() string {
	before := "none"
	if f.HadHistory {
		before = strconv.FormatUint(f.Before, 10)
	}
	return fmt.Sprintf("chain %s: highest nonce %s in the backup, %d more from the audit log, %d more from the node (%d without a known hash); now %d",
		f.Chain, before, f.FromAudit, f.FromNode, f.UnknownTransactionHashes, f.After)
}
