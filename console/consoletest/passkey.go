// Package consoletest has what tests of the console's passkeys share: a
// passkey in software that makes WebAuthn assertions as a browser and an
// authenticator would, for tests that decide approvals without one.
package consoletest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// Passkey is a P-256 passkey in software, making assertions on the
// relying party Origin/RPID with the user present and verified.
type Passkey struct {
	ID           string // the credential ID, base64url as the console names it
	Key          *ecdsa.PrivateKey
	Origin, RPID string
	// Counter is the signature counter the next assertion carries (then
	// one more).
	Counter uint32
}

// New is a passkey named name on origin and rpID.
func New(t testing.TB, name, origin, rpID string) *Passkey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Passkey{ID: base64.RawURLEncoding.EncodeToString([]byte("cred-" + name)), Key: k, Origin: origin, RPID: rpID, Counter: 1}
}

// RawID is the credential ID's bytes.
func (p *Passkey) RawID() []byte {
	b, _ := base64.RawURLEncoding.DecodeString(p.ID)
	return b
}

// COSE is the passkey's public key as WebAuthn registers it.
func (p *Passkey) COSE(t testing.TB) []byte {
	b, err := p.Key.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	c, err := webauthncbor.Marshal(webauthncose.EC2PublicKeyData{PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
		Curve: 1, XCoord: b[1:33], YCoord: b[33:]})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Assert signs challenge as the browser and authenticator would, and
// returns the assertion as a decision carries it (JSON).
func (p *Passkey) Assert(t testing.TB, challenge []byte) string {
	clientData, _ := json.Marshal(map[string]string{"type": "webauthn.get", "challenge": base64.RawURLEncoding.EncodeToString(challenge), "origin": p.Origin})
	rpHash := sha256.Sum256([]byte(p.RPID))
	authData := binary.BigEndian.AppendUint32(append(rpHash[:], 0x05), p.Counter) // flags UP|UV
	p.Counter++
	cdHash := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(append([]byte{}, authData...), cdHash[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, p.Key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	b, _ := json.Marshal(map[string]string{"credential_id": p.ID, "authenticator_data": enc(authData), "client_data_json": enc(clientData), "signature": enc(sig)})
	return string(b)
}
