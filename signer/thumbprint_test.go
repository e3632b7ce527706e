package signer

import (
	"crypto/ed25519"
	"encoding/base64"
	"testing"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"
)

// RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
func TestThumbprintRFC8037(t *testing.T) {
	pub, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	got, err := Thumbprint(ed25519.PublicKey(pub))
	if err != nil {
		t.Fatal(err)
	}
	if want := "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// The secp256k1 thumbprint of a fixed key, as computed independently by
// the jose npm package's calculateJwkThumbprint over
// {"kty":"EC","crv":"secp256k1","x":"TjuBr5wiNMrQnWec5gNe0TkjR85kzkBfXc02Iool3m4","y":"R_01xCFdHt9T5vg940RhXOcZvbD9h49u128G3Sd5Vt4"}.
func TestThumbprintSecp256k1(t *testing.T) {
	x, _ := base64.RawURLEncoding.DecodeString("TjuBr5wiNMrQnWec5gNe0TkjR85kzkBfXc02Iool3m4")
	y, _ := base64.RawURLEncoding.DecodeString("R_01xCFdHt9T5vg940RhXOcZvbD9h49u128G3Sd5Vt4")
	pub, err := ethcrypto.UnmarshalPubkey(append(append([]byte{4}, x...), y...))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Thumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	if want := "-klFXyCvwS9ltkT0uKROAwPlqNSnpQTpVaaqHslhz-w"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
