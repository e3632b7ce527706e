package eth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

// NonceWindow is how many nonces below the highest signed one a key's
// nonce record keeps per chain (older ones are refused: a wallet does
// not go back that far), and RawWindow how many of the newest keep their
// signed bytes for an identical retry. Both bound the record, which
// etcd keeps as one value.
const (
	NonceWindow = 64
	RawWindow   = 16
	maxRawBytes = 2048 // larger signed transactions are not kept; a retry re-signs
	maxVersions = 16   // replacements per nonce
	claimLease  = 2 * time.Minute
)

// nonceTable is what an eth key's ledger record keeps besides spends:
// per chain, what was signed for each nonce. It is updated in the same
// atomic step as the daily limit, so two replicas cannot sign two
// different transactions with one nonce (a double spend).
type nonceTable struct {
	Chains map[string]*chainNonces `json:"chains"` // by chain ID, decimal
}

type chainNonces struct {
	// Highest is the highest nonce signed (History: anything was).
	Highest uint64                 `json:"highest"`
	History bool                   `json:"history,omitempty"`
	Nonces  map[string]*nonceEntry `json:"nonces"` // by nonce, decimal
}

// nonceEntry is one nonce: every transaction signed for it (the first,
// then its replacements), and the claim of a signature in progress. A
// signed transaction is never forgotten while the nonce is in the window.
type nonceEntry struct {
	Signed      []*txFacts `json:"signed,omitempty"`
	Pending     *claimRec  `json:"pending,omitempty"`
	Reservation string     `json:"reservation,omitempty"` // the nonce's one spend against the daily limit

	// enc is the entry's stored form, kept once written: a table
	// shares its unchanged entries with the one it was read from, so a
	// claim or settle encodes one entry, not the window.
	enc []byte
}

// own returns nonce key's entry for the caller to change: a copy (a new
// entry if none), put in its place. Entries are shared between a table
// and the cached one it was cloned from, whose entries (and their kept
// encodings) must not change.
func (c *chainNonces) own(key string) *nonceEntry {
	e := &nonceEntry{}
	if old := c.Nonces[key]; old != nil {
		*e = *old
		e.Signed, e.enc = slices.Clone(old.Signed), nil
	}
	c.Nonces[key] = e
	return e
}

// txFacts are what the guard compares of a transaction.
type txFacts struct {
	Hash   string        `json:"hash"` // the signing hash
	To     string        `json:"to,omitempty"`
	Value  string        `json:"value"`
	Data   string        `json:"data"` // SHA-256 of the call data
	FeeCap string        `json:"fee_cap"`
	TipCap string        `json:"tip_cap"`
	Raw    hexutil.Bytes `json:"raw,omitempty"` // the signed bytes, for an identical retry
}

// claimRec is a signature in progress: the facts of its transaction and
// a token its settle must show. A claim older than claimLease was
// abandoned (a crash) and may be taken over.
type claimRec struct {
	Token string    `json:"token"`
	At    time.Time `json:"at"`
	Facts *txFacts  `json:"facts"`
}

func factsOf(u Unsigned, hash common.Hash) *txFacts {
	f := &txFacts{Hash: hash.Hex(), Value: u.Tx.Value().String(), FeeCap: u.Tx.GasFeeCap().String(), TipCap: u.Tx.GasTipCap().String()}
	if u.Tx.To() != nil {
		f.To = u.Tx.To().Hex()
	}
	sum := sha256.Sum256(u.Tx.Data())
	f.Data = hex.EncodeToString(sum[:])
	return f
}

func readNonces(rec *keyring.LedgerRecord) (*nonceTable, error) {
	if bytes.HasPrefix(rec.Extra, tableMagic) || bytes.HasPrefix(rec.Extra, tableMagicV1) {
		t, err := decodeTable(rec.Extra)
		if err != nil {
			return nil, errs.New(errs.Internal, "the nonce record: %w", err)
		}
		return t, nil
	}
	t := &nonceTable{Chains: map[string]*chainNonces{}}
	if len(rec.Extra) > 0 { // as earlier releases wrote it
		if err := json.Unmarshal(rec.Extra, t); err != nil {
			return nil, errs.New(errs.Internal, "the nonce record: %w", err)
		}
		if err := t.whole(); err != nil {
			return nil, errs.New(errs.Internal, "the nonce record: %w", err)
		}
	}
	return t, nil
}

// whole refuses a table with a null where a chain, an entry or a
// transaction's facts belong: read as nothing, it would free a nonce
// signed for (the binary form refuses the same, see decodeTable).
func (t *nonceTable) whole() error {
	for id, c := range t.Chains {
		if c == nil {
			return fmt.Errorf("chain %s is null", id)
		}
		for n, e := range c.Nonces {
			if e == nil || slices.Contains(e.Signed, nil) || e.Pending != nil && e.Pending.Facts == nil {
				return fmt.Errorf("nonce %s on chain %s has a null where a transaction belongs", n, id)
			}
		}
	}
	return nil
}

func (t *nonceTable) write(rec *keyring.LedgerRecord) error {
	rec.Extra = encodeTable(t, len(rec.Extra))
	return nil
}

func (t *nonceTable) chain(id *big.Int) *chainNonces {
	c, ok := t.Chains[id.String()]
	if !ok {
		c = &chainNonces{Nonces: map[string]*nonceEntry{}}
		t.Chains[id.String()] = c
	}
	if c.Nonces == nil {
		c.Nonces = map[string]*nonceEntry{}
	}
	return c
}

// inWindow refuses a nonce the chain's history puts out of reach: more
// than gap past the highest signed (from 0 before any), or more than
// NonceWindow below it. Comparisons cannot overflow.
func (c *chainNonces) inWindow(n uint64, gap *uint64, chain *big.Int) error {
	if gap != nil {
		base := uint64(0)
		if c.History {
			base = c.Highest
		}
		if n > base && n-base > *gap {
			return errs.New(errs.FailedPrecondition, "policy max-nonce-gap: nonce %d is more than %d past %d on chain %s", n, *gap, base, chain)
		}
	}
	if c.History && n < c.Highest && c.Highest-n > NonceWindow {
		return errs.New(errs.FailedPrecondition, "nonce %d on chain %s is more than %d below the highest signed (%d)", n, chain, NonceWindow, c.Highest)
	}
	return nil
}

// claim is the nonce guard and the daily limit, run inside the ledger's
// atomic update. For a transaction signed before it returns the signed
// bytes (a retry gets the same answer) when they are kept. Otherwise it
// records a claim under token and returns nil: a first transaction for
// the nonce (its value reserved), a retry of one signed before whose
// bytes were not kept, or a replacement of the first as wallets make
// them, a speed-up (the same recipient, value and data, higher fees) or
// a cancel (a plain zero-value transfer to the key's own address), which
// spend nothing more. Anything else, or any claim while another is in
// progress, is refused.
func claim(rec *keyring.LedgerRecord, tt *tables, id string, u Unsigned, hash common.Hash, self common.Address, p *Policy, token string, now time.Time,
	spend func([]keyring.Spend) ([]keyring.Spend, string, error)) ([]byte, error) {
	if f := rec.Fence; f != nil {
		return nil, errs.New(errs.FailedPrecondition, "this key's ledger is fenced: %s; transactions it signed after %s may be missing from it, so it signs none until reconciled (sigil eth reconcile)",
			f.Reason, f.Since.UTC().Format(time.RFC3339))
	}
	t, err := tt.read(id, rec)
	if err != nil {
		return nil, err
	}
	c, n := t.chain(u.ChainID), u.Tx.Nonce()
	if err := c.inWindow(n, p.MaxNonceGap, u.ChainID); err != nil {
		return nil, err
	}
	key := strconv.FormatUint(n, 10)
	e := c.own(key) // the table is dropped unless the claim is recorded
	if e.Pending != nil && now.Sub(e.Pending.At) < claimLease {
		return nil, errs.New(errs.Aborted, "nonce %d on chain %s: a signature is in progress; retry", n, u.ChainID)
	}
	next := factsOf(u, hash)
	switch {
	case len(e.Signed) == 0:
		if e.Reservation == "" { // else an abandoned claim's reservation is taken over
			if rec.Spends, e.Reservation, err = spend(rec.Spends); err != nil {
				return nil, err
			}
		}
	case slices.ContainsFunc(e.Signed, func(f *txFacts) bool { return f.Hash == next.Hash }):
		for _, f := range e.Signed {
			if f.Hash == next.Hash && f.Raw != nil {
				return bytes.Clone(f.Raw), nil // the table's bytes may be the cache's
			}
		}
	case len(e.Signed) >= maxVersions:
		return nil, errs.New(errs.FailedPrecondition, "nonce %d on chain %s was replaced %d times already", n, u.ChainID, maxVersions)
	case !isSpeedUp(e.Signed[0], next) && !isCancel(u, self):
		return nil, errs.New(errs.FailedPrecondition, "nonce %d on chain %s was signed for transaction %s; only a speed-up (same recipient, value and data, higher fees) or a cancel (a plain zero-value transfer to %s) may replace it",
			n, u.ChainID, e.Signed[0].Hash, self.Hex())
	}
	e.Pending = &claimRec{Token: token, At: now.Round(0), Facts: next} // wall time, as a decoded table has it
	return nil, tt.write(id, t, rec)
}

// isSpeedUp: the transaction first signed, for strictly higher fees.
func isSpeedUp(first, next *txFacts) bool {
	return first.To == next.To && first.Value == next.Value && first.Data == next.Data && bigger(next.FeeCap, first.FeeCap) && !bigger(first.TipCap, next.TipCap)
}

// isCancel: a plain (legacy or EIP-1559, no access list) zero-value
// transfer to the key's own address, with no data.
func isCancel(u Unsigned, self common.Address) bool {
	tx := u.Tx
	return (tx.Type() == types.LegacyTxType || tx.Type() == types.DynamicFeeTxType) && len(tx.AccessList()) == 0 &&
		tx.To() != nil && *tx.To() == self && tx.Value().Sign() == 0 && len(tx.Data()) == 0
}

func bigger(a, b string) bool {
	x, _ := new(big.Int).SetString(a, 10)
	y, _ := new(big.Int).SetString(b, 10)
	return x != nil && y != nil && x.Cmp(y) > 0
}

// settle ends the claim under token. Signed (raw set): its transaction
// joins the nonce's history, for good. Failed (raw nil): the claim is
// dropped and, if nothing was ever signed for the nonce, so is the
// nonce's reservation; what was signed before stays.
func settle(rec *keyring.LedgerRecord, tt *tables, id string, chainID *big.Int, nonce uint64, token string, raw []byte) error {
	t, err := tt.read(id, rec)
	if err != nil {
		return err
	}
	c, key := t.chain(chainID), strconv.FormatUint(nonce, 10)
	if e := c.Nonces[key]; e == nil || e.Pending == nil || e.Pending.Token != token {
		return nil // taken over after its lease, or settled
	}
	e := c.own(key)
	facts := e.Pending.Facts.clone()
	e.Pending = nil
	switch {
	case raw != nil:
		if len(raw) <= maxRawBytes {
			facts.Raw = bytes.Clone(raw)
		}
		if !slices.ContainsFunc(e.Signed, func(f *txFacts) bool { return f.Hash == facts.Hash }) {
			e.Signed = append(e.Signed, facts)
		}
		if !c.History || nonce > c.Highest {
			c.Highest, c.History = nonce, true
		}
		c.prune()
	case len(e.Signed) == 0:
		delete(c.Nonces, key)
		rec.Spends = keyring.Release(rec.Spends, e.Reservation)
	}
	return tt.write(id, t, rec)
}

// prune drops the nonces out of the window, and the signed bytes of all
// but the newest RawWindow.
func (c *chainNonces) prune() {
	for k, e := range c.Nonces {
		m, _ := strconv.ParseUint(k, 10, 64)
		switch {
		case m < c.Highest && c.Highest-m > NonceWindow && e.Pending == nil:
			delete(c.Nonces, k)
		case m < c.Highest && c.Highest-m > RawWindow && slices.ContainsFunc(e.Signed, func(f *txFacts) bool { return f.Raw != nil }):
			e = c.own(k)
			for i, f := range e.Signed {
				f = f.clone()
				f.Raw, e.Signed[i] = nil, f
			}
		}
	}
}

// guard claims u's nonce (and reserves its value) in the ledger, returning
// earlier signed bytes for a retry, and a function that settles the claim
// once signing has succeeded (raw) or failed (nil). A signature whose
// settle fails must not leave: its claim lapses after its lease, and only
// a signature never handed out may then be replaced.
func (s *Signer) guard(ctx context.Context, k *keyring.Key, u Unsigned, hash common.Hash) ([]byte, func(raw []byte) error, error) {
	if s.Ledger == nil {
		return nil, nil, errs.New(errs.FailedPrecondition, "key %q: this keyring store keeps no ledger, so nonces cannot be guarded", k.ID)
	}
	p := PolicyOf(k)
	spend := func(spends []keyring.Spend) ([]keyring.Spend, string, error) {
		if p.DailyLimit == nil || u.Tx.Value().Sign() == 0 {
			return spends, "", nil
		}
		res := keyring.NewReservationID()
		out, err := keyring.Reserve(spends, res, u.Tx.Value(), &p.DailyLimit.Int, s.Now(), DailyWindow)
		if err != nil {
			return nil, "", fmt.Errorf("policy daily limit: %w", err)
		}
		return out, res, nil
	}
	self, token := common.HexToAddress(Address(k)), keyring.NewReservationID()
	var cached []byte
	err := s.Ledger.UpdateLedger(ctx, k.ID, func(rec *keyring.LedgerRecord) (err error) {
		cached, err = claim(rec, &s.tables, k.ID, u, hash, self, p, token, s.Now(), spend)
		return err
	})
	if err != nil || cached != nil {
		return cached, nil, err
	}
	return nil, func(raw []byte) error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		defer cancel()
		err := s.Ledger.UpdateLedger(sctx, k.ID, func(rec *keyring.LedgerRecord) error {
			return settle(rec, &s.tables, k.ID, u.ChainID, u.Tx.Nonce(), token, raw)
		})
		if err != nil {
			s.Log.Error("settling a nonce claim failed; it lapses after its lease", "key", k.ID, "nonce", u.Tx.Nonce(), "signed", raw != nil, "err", err)
			return errs.New(errs.Unavailable, "recording the signature of nonce %d failed; it is withheld, retry: %w", u.Tx.Nonce(), err)
		}
		return nil
	}, nil
}

// settleTimeout bounds recording a signature's outcome.
const settleTimeout = 10 * time.Second
