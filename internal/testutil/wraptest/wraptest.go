// Package wraptest wraps private keys for import in Go, as
// docs/import.md's openssl commands do (an AES-256 key encrypted with
// RSA-OAEP, then the PKCS#8 key wrapped with it, RFC 5649), for tests
// that import many keys; the openssl commands themselves are tested by
// tests/e2e.
package wraptest

import (
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // the OAEP hash SoftHSM 2.6 unwraps with
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"hash"
	"testing"
)

// Wrap wraps priv to the wrapping public key pub, with OAEP hash
// oaepHash ("sha256" or "sha1").
func Wrap(tb testing.TB, pub *rsa.PublicKey, oaepHash string, priv any) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	kek := make([]byte, 32)
	rand.Read(kek)
	var h hash.Hash = sha256.New()
	if oaepHash == "sha1" {
		h = sha1.New()
	}
	ct, err := rsa.EncryptOAEP(h, rand.Reader, pub, kek, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return append(ct, KWP(kek, der)...)
}

// KWP is AES key wrap with padding (RFC 5649).
func KWP(kek, pt []byte) []byte {
	b, _ := aes.NewCipher(kek)
	padded := make([]byte, (len(pt)+7)/8*8)
	copy(padded, pt)
	a := []byte{0xA6, 0x59, 0x59, 0xA6, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(a[4:], uint32(len(pt)))
	n := len(padded) / 8
	r := make([][]byte, n)
	for i := range r {
		r[i] = append([]byte(nil), padded[i*8:i*8+8]...)
	}
	buf := make([]byte, 16)
	for j := range 6 {
		for i := range n {
			copy(buf, a)
			copy(buf[8:], r[i])
			b.Encrypt(buf, buf)
			copy(a, buf[:8])
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(a)^uint64(n*j+i+1))
			copy(r[i], buf[8:])
		}
	}
	out := append([]byte(nil), a...)
	for _, x := range r {
		out = append(out, x...)
	}
	return out
}
