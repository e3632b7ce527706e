package signer

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"math/big"
	"testing"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"
)

func TestDERAndRawRoundTrip(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	d := sha256.Sum256([]byte("m"))
	var der []byte
	for range 64 { // r and s of varying lengths, some with a high bit set
		der, _ = ecdsa.SignASN1(rand.Reader, k, d[:])
		raw, err := DERToRaw(der, CurveSize(k.Curve))
		if err != nil || len(raw) != 96 {
			t.Fatal(len(raw), err)
		}
		back, err := RawToDER(raw)
		if err != nil || !bytes.Equal(back, der) {
			t.Fatalf("raw → DER gives %x, crypto/ecdsa %x (%v)", back, der, err)
		}
	}
	negative := []byte{0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01}
	for _, bad := range [][]byte{nil, {0x30, 0x00}, append(der, 0), der[:len(der)-1], negative} {
		if _, err := DERToRaw(bad, 48); err == nil {
			t.Errorf("DERToRaw accepted %x", bad)
		}
	}
}

func TestPublicKeyRoundTripEveryType(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k1, _ := ethcrypto.GenerateKey()
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	for _, pub := range []any{&p256.PublicKey, &k1.PublicKey, ed} {
		der, err := MarshalPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParsePublicKey(der)
		if err != nil {
			t.Fatal(err)
		}
		// Compared as encoded: a secp256k1 key comes back on this
		// package's curve value, not go-ethereum's.
		again, err := MarshalPublicKey(got)
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("%T changed in the round trip: %v", pub, err)
		}
	}
}

func TestLowS(t *testing.T) {
	k, _ := ethcrypto.GenerateKey()
	d := sha256.Sum256([]byte("m"))
	sig, _ := ethcrypto.Sign(d[:], k) // go-ethereum signs low-S
	high := append([]byte(nil), sig[:64]...)
	new(big.Int).Sub(secp256k1N, new(big.Int).SetBytes(sig[32:64])).FillBytes(high[32:])
	if err := Verify(&k.PublicKey, ES256K, d[:], high); err != nil {
		t.Fatal("high-S signature does not verify after normalisation")
	}
	if got := LowS(high); string(got) != string(sig[:64]) {
		t.Fatal("LowS did not restore the low-S form")
	}
}

// RawToDER, written out by hand, agrees with encoding/asn1 on every size
// of half (P-256's 32 bytes, P-384's 48, P-521's 66, whose SEQUENCE needs
// the long length form) and on halves with leading zeros, a top bit set,
// or nothing but zeros.
func TestRawToDERAgreesWithEncodingASN1(t *testing.T) {
	for _, size := range []int{32, 48, 66} {
		for i := range 300 {
			raw := make([]byte, 2*size)
			rand.Read(raw)
			switch i % 5 {
			case 1:
				clear(raw[:size/2]) // leading zeros in r
			case 2:
				raw[size] |= 0x80 // s's top bit set
			case 3:
				clear(raw[size:]) // s is zero
			case 4:
				raw[0], raw[1] = 0, 0x80 // after a zero byte, a top bit
			}
			want, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:size]), new(big.Int).SetBytes(raw[size:])})
			if err != nil {
				t.Fatal(err)
			}
			got, err := RawToDER(raw)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("size %d, %x: got %x, want %x (%v)", size, raw, got, want, err)
			}
		}
	}
	for _, bad := range [][]byte{nil, {1}, make([]byte, 134)} {
		if _, err := RawToDER(bad); err == nil {
			t.Errorf("RawToDER took %d bytes", len(bad))
		}
	}
}
