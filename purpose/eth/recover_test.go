package eth

import (
	"crypto/sha256"
	"math/big"
	"testing"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"

	"github.com/sigil-hsm/sigil/signer"
)

func TestRecoverable(t *testing.T) {
	k, _ := ethcrypto.GenerateKey()
	other, _ := ethcrypto.GenerateKey()
	hash := sha256.Sum256([]byte("tx"))
	sig, _ := ethcrypto.Sign(hash[:], k)
	high := append([]byte(nil), sig[:64]...)
	new(big.Int).Sub(ethcrypto.S256().Params().N, new(big.Int).SetBytes(sig[32:64])).FillBytes(high[32:])
	for _, in := range [][]byte{sig[:64], high, mustDER(t, high)} {
		got, err := Recoverable(in, hash[:], &k.PublicKey)
		if err != nil || string(got) != string(sig) {
			t.Fatalf("Recoverable: %x, %v; want %x", got, err, sig)
		}
	}
	if _, err := Recoverable(sig[:64], hash[:], &other.PublicKey); err == nil {
		t.Fatal("a signature by another key was finished")
	}
}

func mustDER(t *testing.T, raw []byte) []byte {
	der, err := signer.RawToDER(raw)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
