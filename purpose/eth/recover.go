package eth

import (
	"bytes"
	"crypto/ecdsa"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/signer"
)

// Recoverable turns a secp256k1 signature over hash, as any backend
// returns it (r‖s, or DER from a KMS), into Ethereum's 65-byte r‖s‖v with
// v ∈ {0, 1}: s is moved to the lower half of the group order (EIP-2),
// and v is the recovery id that recovers pub, found by trying both. A
// signature that recovers to no key, or to another key, is an internal
// error and is never returned.
func Recoverable(sig, hash []byte, pub *ecdsa.PublicKey) ([]byte, error) {
	if len(sig) != 64 {
		raw, err := signer.DERToRaw(sig, 32)
		if err != nil {
			return nil, err
		}
		sig = raw
	}
	want := ethcrypto.FromECDSAPub(pub)
	out := append(signer.LowS(sig), 0)
	for v := byte(0); v < 2; v++ {
		out[64] = v
		if got, err := ethcrypto.Ecrecover(hash, out); err == nil && bytes.Equal(got, want) {
			return out, nil
		}
	}
	return nil, errs.New(errs.Internal, "secp256k1 signature does not recover to the key's public key")
}
