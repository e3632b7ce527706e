package eth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

// NonceWindow is how many nonces below the highest signed one a key's
// nonce record keeps per chain: older ones cannot be mined any more.
const NonceWindow = 1024

// nonceTable is what an eth key's ledger record keeps besides spends:
// per chain, every transaction signed by nonce. It is updated in the same
// atomic step as the daily limit, so two replicas cannot sign two
// different transactions with one nonce (a double spend).
type nonceTable struct {
	Chains map[string]*chainNonces `json:"chains"` // by chain ID, decimal
}

type chainNonces struct {
	Highest uint64                 `json:"highest"`
	Signed  map[string]*nonceEntry `json:"signed"` // by nonce, decimal
}

// nonceEntry is one transaction a nonce was claimed for.
type nonceEntry struct {
	Hash        string        `json:"hash"` // its signing hash
	To          string        `json:"to,omitempty"`
	Value       string        `json:"value"`
	Data        string        `json:"data"` // SHA-256 of the call data
	FeeCap      string        `json:"fee_cap"`
	TipCap      string        `json:"tip_cap"`
	Reservation string        `json:"reservation,omitempty"` // its spend against the daily limit
	Raw         hexutil.Bytes `json:"raw,omitempty"`         // the signed transaction, once made
}

func entryOf(u Unsigned, hash common.Hash) *nonceEntry {
	e := &nonceEntry{Hash: hash.Hex(), Value: u.Tx.Value().String(), FeeCap: u.Tx.GasFeeCap().String(), TipCap: u.Tx.GasTipCap().String()}
	if u.Tx.To() != nil {
		e.To = u.Tx.To().Hex()
	}
	sum := sha256.Sum256(u.Tx.Data())
	e.Data = hex.EncodeToString(sum[:])
	return e
}

func readNonces(rec *keyring.LedgerRecord) (*nonceTable, error) {
	t := &nonceTable{Chains: map[string]*chainNonces{}}
	if len(rec.Extra) > 0 {
		if err := json.Unmarshal(rec.Extra, t); err != nil {
			return nil, errs.New(errs.Internal, "the nonce record: %w", err)
		}
	}
	return t, nil
}

func (t *nonceTable) write(rec *keyring.LedgerRecord) error {
	b, err := json.Marshal(t)
	rec.Extra = b
	return err
}

func (t *nonceTable) chain(id *big.Int) *chainNonces {
	c, ok := t.Chains[id.String()]
	if !ok {
		c = &chainNonces{Signed: map[string]*nonceEntry{}}
		t.Chains[id.String()] = c
	}
	return c
}

// claim is the nonce guard and the daily limit, run inside the ledger's
// atomic update. It returns the signed bytes when this very transaction
// was signed before (a retry gets the same answer), or records the claim
// (reserving its value) and returns nil. A different transaction for a
// nonce already claimed is refused unless it replaces the earlier one as
// wallets do: a speed-up (the same recipient, value and data, higher
// fees) or a cancel (a zero-value transfer to the key's own address, no
// data). Neither spends again: the nonce's value was counted once.
func claim(rec *keyring.LedgerRecord, u Unsigned, hash common.Hash, self common.Address, p *Policy, spend func([]keyring.Spend) ([]keyring.Spend, string, error)) ([]byte, error) {
	t, err := readNonces(rec)
	if err != nil {
		return nil, err
	}
	c, n := t.chain(u.ChainID), u.Tx.Nonce()
	if p.MaxNonceGap != nil && len(c.Signed) > 0 && n > c.Highest+*p.MaxNonceGap {
		return nil, errs.New(errs.FailedPrecondition, "policy max-nonce-gap: nonce %d is more than %d past the highest signed on chain %s (%d)", n, *p.MaxNonceGap, u.ChainID, c.Highest)
	}
	if len(c.Signed) > 0 && c.Highest >= NonceWindow && n < c.Highest-NonceWindow {
		return nil, errs.New(errs.FailedPrecondition, "nonce %d on chain %s is far below the highest signed (%d)", n, u.ChainID, c.Highest)
	}
	key := strconv.FormatUint(n, 10)
	next := entryOf(u, hash)
	switch old := c.Signed[key]; {
	case old == nil:
		if rec.Spends, next.Reservation, err = spend(rec.Spends); err != nil {
			return nil, err
		}
	case old.Hash == next.Hash:
		if old.Raw != nil {
			return old.Raw, nil
		}
		next.Reservation = old.Reservation // a retry of a signature that did not finish
	case isSpeedUp(old, next) || isCancel(u, self):
		next.Reservation = old.Reservation
	default:
		return nil, errs.New(errs.FailedPrecondition, "nonce %d on chain %s was signed for transaction %s; only a speed-up (same recipient, value and data, higher fees) or a cancel (a zero-value transfer to %s) may replace it", n, u.ChainID, old.Hash, self.Hex())
	}
	c.Signed[key] = next
	c.Highest = max(c.Highest, n)
	for k := range c.Signed {
		if m, _ := strconv.ParseUint(k, 10, 64); c.Highest >= NonceWindow && m < c.Highest-NonceWindow {
			delete(c.Signed, k)
		}
	}
	return nil, t.write(rec)
}

// isSpeedUp: the same transaction but for strictly higher fees.
func isSpeedUp(old, next *nonceEntry) bool {
	return old.To == next.To && old.Value == next.Value && old.Data == next.Data && bigger(next.FeeCap, old.FeeCap) && !bigger(old.TipCap, next.TipCap)
}

// isCancel: a zero-value transfer to the key's own address, no data.
func isCancel(u Unsigned, self common.Address) bool {
	return u.Tx.To() != nil && *u.Tx.To() == self && u.Tx.Value().Sign() == 0 && len(u.Tx.Data()) == 0
}

func bigger(a, b string) bool {
	x, _ := new(big.Int).SetString(a, 10)
	y, _ := new(big.Int).SetString(b, 10)
	return x != nil && y != nil && x.Cmp(y) > 0
}

// settle records the signed bytes of the claim for hash, or, when raw is
// nil (signing failed), drops the claim and releases its spend.
func settle(rec *keyring.LedgerRecord, chainID *big.Int, nonce uint64, hash common.Hash, raw []byte) error {
	t, err := readNonces(rec)
	if err != nil {
		return err
	}
	c, key := t.chain(chainID), strconv.FormatUint(nonce, 10)
	e := c.Signed[key]
	if e == nil || e.Hash != hash.Hex() || e.Raw != nil {
		return nil // replaced meanwhile, or settled
	}
	if raw != nil {
		e.Raw = bytes.Clone(raw)
	} else {
		delete(c.Signed, key)
		rec.Spends = keyring.Release(rec.Spends, e.Reservation)
	}
	return t.write(rec)
}

// guard claims u's nonce (and reserves its value) in the ledger, returning
// earlier signed bytes for a retry, and a function that settles the claim
// once signing has succeeded (raw) or failed (nil).
func (s *Signer) guard(ctx context.Context, k *keyring.Key, u Unsigned, hash common.Hash) ([]byte, func(raw []byte), error) {
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
	self := common.HexToAddress(Address(k))
	var cached []byte
	err := s.Ledger.UpdateLedger(ctx, k.ID, func(rec *keyring.LedgerRecord) (err error) {
		cached, err = claim(rec, u, hash, self, p, spend)
		return err
	})
	if err != nil || cached != nil {
		return cached, nil, err
	}
	return nil, func(raw []byte) {
		err := s.Ledger.UpdateLedger(context.WithoutCancel(ctx), k.ID, func(rec *keyring.LedgerRecord) error {
			return settle(rec, u.ChainID, u.Tx.Nonce(), hash, raw)
		})
		if err != nil {
			s.Log.Error("settling a nonce claim failed", "key", k.ID, "nonce", u.Tx.Nonce(), "signed", raw != nil, "err", err)
		}
	}, nil
}
