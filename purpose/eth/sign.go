package eth

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
)

// MaxMessageBytes bounds EIP-191 messages and EIP-712 documents.
const MaxMessageBytes = 64 << 10

// Signer signs for eth-purpose keys.
type Signer struct {
	Ledger keyring.Ledger // for daily limits
	Now    func() time.Time
	Log    *slog.Logger
}

// Signed is a signed transaction.
type Signed struct {
	Raw  []byte
	Hash common.Hash
	From common.Address
}

// SignTx checks u against the key's policy, reserves its value against
// the daily limit, and signs it. The reservation is released if signing
// fails, so a refused or failed request spends nothing.
func (s *Signer) SignTx(ctx context.Context, sg keyring.Signing, u Unsigned) (Signed, error) {
	k := sg.Key
	if u.From != nil && *u.From != common.HexToAddress(Address(k)) {
		return Signed{}, errs.New(errs.InvalidArgument, "transaction: from %s is not the address of key %q (%s)", u.From.Hex(), k.ID, Address(k))
	}
	err := Check(k, u)
	if err == nil {
		var release func()
		if release, err = s.reserve(ctx, k, u.Tx.Value()); err == nil {
			var out Signed
			if out, err = s.sign(ctx, sg, u); err == nil {
				s.decision(k, u, "allowed", nil)
				return out, nil
			}
			release()
		}
	}
	s.decision(k, u, "denied", err)
	return Signed{}, err
}

// reserve counts value against the key's daily limit, if it has one.
func (s *Signer) reserve(ctx context.Context, k *keyring.Key, value *big.Int) (func(), error) {
	limit := PolicyOf(k).DailyLimit
	if limit == nil || value.Sign() == 0 {
		return func() {}, nil
	}
	if s.Ledger == nil {
		return nil, errs.New(errs.FailedPrecondition, "key %q has a daily limit, and this keyring store keeps no ledger", k.ID)
	}
	res, err := s.Ledger.Reserve(ctx, k.ID, value, &limit.Int, s.Now(), DailyWindow)
	if err != nil {
		return nil, fmt.Errorf("policy daily limit: %w", err)
	}
	return func() {
		if err := s.Ledger.Release(context.WithoutCancel(ctx), k.ID, res); err != nil {
			s.Log.Error("releasing a spend reservation failed; the daily limit counts it", "key", k.ID, "err", err)
		}
	}, nil
}

func (s *Signer) sign(ctx context.Context, sg keyring.Signing, u Unsigned) (Signed, error) {
	ts := types.LatestSignerForChainID(u.ChainID)
	h := ts.Hash(u.Tx)
	sig, err := s.signHash(ctx, sg, h[:])
	if err != nil {
		return Signed{}, err
	}
	// signHash checked that sig recovers to the key over ts.Hash(u.Tx);
	// WithSignature attaches it under the same signer, so a second
	// recovery (types.Sender, 59 µs here) would prove nothing new.
	tx, err := u.Tx.WithSignature(ts, sig)
	if err != nil {
		return Signed{}, errs.New(errs.Internal, "attaching the signature: %w", err)
	}
	raw, err := tx.MarshalBinary()
	if err != nil {
		return Signed{}, errs.New(errs.Internal, "encoding the signed transaction: %w", err)
	}
	return Signed{Raw: raw, Hash: tx.Hash(), From: common.HexToAddress(Address(sg.Key))}, nil
}

// signHash signs a 32-byte hash and returns r‖s‖v with v ∈ {0, 1}, low-S,
// checked to recover to the key.
func (s *Signer) signHash(ctx context.Context, sg keyring.Signing, hash []byte) ([]byte, error) {
	pub, ok := sg.Generation.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil, errs.New(errs.Internal, "key %q has no secp256k1 public key", sg.Key.ID)
	}
	sig, err := sg.Sign(ctx, hash)
	if err != nil {
		return nil, err
	}
	return Recoverable(sig, hash, pub)
}

// SignMessage signs an EIP-191 personal message: v is 27 or 28.
func (s *Signer) SignMessage(ctx context.Context, sg keyring.Signing, msg []byte) ([]byte, error) {
	if len(msg) > MaxMessageBytes {
		return nil, errs.New(errs.InvalidArgument, "message: %d bytes, at most %d", len(msg), MaxMessageBytes)
	}
	sig, err := s.signHash(ctx, sg, accounts.TextHash(msg))
	if err != nil {
		return nil, err
	}
	sig[64] += 27
	return sig, nil
}

// SignTypedData signs an eth_signTypedData_v4 document: v is 27 or 28. A
// domain that names a chain must name one the key's policy allows.
func (s *Signer) SignTypedData(ctx context.Context, sg keyring.Signing, doc []byte) ([]byte, common.Hash, error) {
	td, hash, err := hashTypedData(doc)
	if err != nil {
		return nil, common.Hash{}, err
	}
	if id := td.Domain.ChainId; id != nil && (!(*big.Int)(id).IsUint64() || !PolicyOf(sg.Key).AllowsChain((*big.Int)(id).Uint64())) {
		return nil, common.Hash{}, errs.New(errs.FailedPrecondition, "policy chain-ids: key %q does not sign for chain %s", sg.Key.ID, (*big.Int)(id))
	}
	sig, err := s.signHash(ctx, sg, hash[:])
	if err != nil {
		return nil, common.Hash{}, err
	}
	sig[64] += 27
	return sig, hash, nil
}

// hashTypedData checks an EIP-712 document (checkTypedData), then parses
// and hashes it with go-ethereum.
func hashTypedData(doc []byte) (apitypes.TypedData, common.Hash, error) {
	var td apitypes.TypedData
	if err := checkTypedData(doc); err != nil {
		return td, common.Hash{}, err
	}
	if err := json.Unmarshal(doc, &td); err != nil {
		return td, common.Hash{}, errs.New(errs.InvalidArgument, "typed data: %v", err)
	}
	hash, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return td, common.Hash{}, errs.New(errs.InvalidArgument, "typed data: %v", err)
	}
	return td, common.BytesToHash(hash), nil
}

// decision records a policy decision; payloads are not logged.
func (s *Signer) decision(k *keyring.Key, u Unsigned, outcome string, err error) {
	to := "creation"
	if u.Tx.To() != nil {
		to = u.Tx.To().Hex()
	}
	s.Log.Info("eth transaction "+outcome, "key", k.ID, "chain", u.ChainID, "to", to, "value", u.Tx.Value(), "max_fee", MaxFee(u.Tx), "reason", errString(err))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
