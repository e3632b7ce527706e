package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// RawToDER converts an r‖s ECDSA signature to ASN.1 DER: a SEQUENCE of
// two INTEGERs, each its half's minimal big-endian bytes with a zero in
// front when the top bit is set. Written out by hand in one allocation,
// since every ECDSA signature takes this step (cryptobyte with big.Int
// cost a batch item a tenth of its overhead).
func RawToDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 || len(raw) > 2*66 {
		return nil, errs.New(errs.Internal, "ECDSA signature of length %d", len(raw))
	}
	n := len(raw) / 2
	r, s := minimal(raw[:n]), minimal(raw[n:])
	body := derIntLen(r) + derIntLen(s)
	out := make([]byte, 0, 3+body)
	out = append(out, 0x30)
	if body >= 0x80 { // P-521's: the long form, one length byte
		out = append(out, 0x81)
	}
	out = append(out, byte(body))
	return appendDERInt(appendDERInt(out, r), s), nil
}

// minimal is b without leading zeros, or one zero byte if it is all
// zeros.
func minimal(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// derIntLen is the length of the DER INTEGER holding unsigned minimal b.
func derIntLen(b []byte) int { return 2 + len(b) + int(b[0]>>7) }

func appendDERInt(out, b []byte) []byte {
	out = append(out, 0x02, byte(len(b)+int(b[0]>>7)))
	if b[0]&0x80 != 0 {
		out = append(out, 0)
	}
	return append(out, b...)
}

// DERToRaw converts an ASN.1 DER ECDSA signature to r‖s with halves of
// size bytes.
func DERToRaw(der []byte, size int) ([]byte, error) {
	r, s := new(big.Int), new(big.Int)
	in, seq := cryptobyte.String(der), cryptobyte.String(nil)
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1Integer(r) || !seq.ReadASN1Integer(s) || !seq.Empty() ||
		r.Sign() <= 0 || s.Sign() <= 0 || r.BitLen() > 8*size || s.BitLen() > 8*size {
		return nil, errs.New(errs.Internal, "malformed DER ECDSA signature")
	}
	raw := make([]byte, 2*size)
	r.FillBytes(raw[:size])
	s.FillBytes(raw[size:])
	return raw, nil
}

// Verify checks sig, in this package's encoding, over input with pub.
func Verify(pub crypto.PublicKey, alg Algorithm, input, sig []byte) error {
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = verifyECDSA(k, input, sig)
	case *rsa.PublicKey:
		if alg == PS256 {
			ok = rsa.VerifyPSS(k, crypto.SHA256, input, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		} else {
			ok = rsa.VerifyPKCS1v15(k, alg.Hash(), input, sig) == nil
		}
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, input, sig)
	}
	if !ok {
		return errs.New(errs.Internal, "%s signature does not verify", alg)
	}
	return nil
}

func verifyECDSA(k *ecdsa.PublicKey, digest, sig []byte) bool {
	if IsSecp256k1(k) {
		return verifySecp256k1(k, digest, sig)
	}
	der, err := RawToDER(sig)
	return err == nil && ecdsa.VerifyASN1(k, digest, der)
}

var (
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidSecp256k1   = asn1.ObjectIdentifier{1, 3, 132, 0, 10}
)

type spki struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

// MarshalPublicKey encodes pub as a DER SubjectPublicKeyInfo. Go's x509
// does not know secp256k1, so that curve is encoded here with OID
// 1.3.132.0.10.
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	if k, ok := pub.(*ecdsa.PublicKey); ok && IsSecp256k1(k) {
		params, err := asn1.Marshal(oidSecp256k1)
		if err != nil {
			return nil, err
		}
		point := uncompressed(k)
		return asn1.Marshal(spki{
			Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidECPublicKey, Parameters: asn1.RawValue{FullBytes: params}},
			PublicKey: asn1.BitString{Bytes: point, BitLength: 8 * len(point)},
		})
	}
	return x509.MarshalPKIXPublicKey(pub)
}

// ParsePublicKey decodes a DER SubjectPublicKeyInfo, secp256k1 included.
func ParsePublicKey(der []byte) (crypto.PublicKey, error) {
	var info spki
	if rest, err := asn1.Unmarshal(der, &info); err == nil && len(rest) == 0 &&
		info.Algorithm.Algorithm.Equal(oidECPublicKey) {
		var curve asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &curve); err == nil && curve.Equal(oidSecp256k1) {
			return parseSecp256k1(info.PublicKey.Bytes)
		}
	}
	return x509.ParsePKIXPublicKey(der)
}

// PublicKeyPEM returns pub as a "PUBLIC KEY" PEM block.
func PublicKeyPEM(pub crypto.PublicKey) (string, error) {
	der, err := MarshalPublicKey(pub)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// ParsePublicKeyPEM reads a "PUBLIC KEY" PEM block.
func ParsePublicKeyPEM(text string) (crypto.PublicKey, error) {
	b, _ := pem.Decode([]byte(text))
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, errs.New(errs.InvalidArgument, "not a PUBLIC KEY PEM block")
	}
	return ParsePublicKey(b.Bytes)
}

// CurveSize is the byte size of an ECDSA key's field, the size of each
// half of an r‖s signature.
func CurveSize(c elliptic.Curve) int { return (c.Params().BitSize + 7) / 8 }

// LowS returns a copy of a secp256k1 r‖s signature with s in the lower half
// of the group order (EIP-2), as Ethereum requires.
func LowS(sig []byte) []byte {
	out := append([]byte(nil), sig...)
	s := new(big.Int).SetBytes(sig[32:])
	if s.Cmp(new(big.Int).Rsh(secp256k1N, 1)) > 0 {
		s.Sub(secp256k1N, s).FillBytes(out[32:])
	}
	return out
}
