package eth

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
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

	tables tables // the nonce tables this signer last wrote
}

// Signed is a signed transaction.
type Signed struct {
	Raw  []byte
	Hash common.Hash
	From common.Address
}

// SignTx checks u against the key's policy, claims its nonce and reserves
// its value against the daily limit in one atomic ledger update (the
// nonce guard: see claim), and signs it. A retry of a transaction already
// signed gets the same signed bytes; a failed signature releases its
// claim, so a refused or failed request spends nothing.
func (s *Signer) SignTx(ctx context.Context, sg keyring.Signing, u Unsigned) (Signed, error) {
	k := sg.Key
	if u.From != nil && *u.From != common.HexToAddress(Address(k)) {
		return Signed{}, errs.New(errs.InvalidArgument, "transaction: from %s is not the address of key %q (%s)", u.From.Hex(), k.ID, Address(k))
	}
	out, err := s.signGuarded(ctx, sg, u)
	if err != nil {
		s.decision(k, u, "denied", err)
		return Signed{}, err
	}
	s.decision(k, u, "allowed", nil)
	return out, nil
}

func (s *Signer) signGuarded(ctx context.Context, sg keyring.Signing, u Unsigned) (Signed, error) {
	if err := Check(sg.Key, u); err != nil {
		return Signed{}, err
	}
	hash := types.LatestSignerForChainID(u.ChainID).Hash(u.Tx)
	cached, settle, err := s.guard(ctx, sg.Key, u, hash)
	switch {
	case err != nil:
		return Signed{}, err
	case cached != nil:
		tx := new(types.Transaction)
		if err := tx.UnmarshalBinary(cached); err != nil {
			return Signed{}, errs.New(errs.Internal, "the transaction signed before: %w", err)
		}
		return Signed{Raw: cached, Hash: tx.Hash(), From: common.HexToAddress(Address(sg.Key))}, nil
	}
	out, err := s.sign(ctx, sg, u)
	if serr := settle(out.Raw); err == nil && serr != nil { // out.Raw is nil when signing failed: the claim is dropped
		return Signed{}, serr // not recorded as signed: it must not leave
	}
	return out, err
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
