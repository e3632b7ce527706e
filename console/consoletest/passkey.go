// Package consoletest has what tests of the console's passkeys share: a
// passkey in software that registers, signs in and makes WebAuthn
// assertions as a browser and an authenticator would, for tests (and
// the benchmark) that use the console without a browser.
package consoletest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
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
	p, err := Generate(name, origin, rpID)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Generate is New for a program that is not a test.
func Generate(name, origin, rpID string) (*Passkey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Passkey{ID: base64.RawURLEncoding.EncodeToString([]byte("cred-" + name)), Key: k, Origin: origin, RPID: rpID, Counter: 1}, nil
}

// RawID is the credential ID's bytes.
func (p *Passkey) RawID() []byte {
	b, _ := base64.RawURLEncoding.DecodeString(p.ID)
	return b
}

// COSE is the passkey's public key as WebAuthn registers it.
func (p *Passkey) COSE(t testing.TB) []byte {
	c, err := p.cose()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (p *Passkey) cose() ([]byte, error) {
	b, err := p.Key.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	return webauthncbor.Marshal(webauthncose.EC2PublicKeyData{PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
		Curve: 1, XCoord: b[1:33], YCoord: b[33:]})
}

// Assert signs challenge as the browser and authenticator would, and
// returns the assertion as a decision carries it (JSON).
func (p *Passkey) Assert(t testing.TB, challenge []byte) string {
	authData, clientData, sig, err := p.sign("webauthn.get", challenge, nil)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	b, _ := json.Marshal(map[string]string{"credential_id": p.ID, "authenticator_data": enc(authData), "client_data_json": enc(clientData), "signature": enc(sig)})
	return string(b)
}

// sign makes a ceremony's client data over challenge and the
// authenticator's signature over it, with the next counter; attested
// (a registration) carries the credential and its public key.
func (p *Passkey) sign(ceremony string, challenge, attested []byte) (authData, clientData, sig []byte, err error) {
	clientData, _ = json.Marshal(map[string]string{"type": ceremony, "challenge": base64.RawURLEncoding.EncodeToString(challenge), "origin": p.Origin})
	rpHash := sha256.Sum256([]byte(p.RPID))
	flags := byte(0x05) // UP|UV
	if attested != nil {
		flags |= 0x40 // AT
	}
	authData = append(binary.BigEndian.AppendUint32(append(rpHash[:], flags), p.Counter), attested...)
	p.Counter++
	cdHash := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(append([]byte{}, authData...), cdHash[:]...))
	sig, err = ecdsa.SignASN1(rand.Reader, p.Key, digest[:])
	return authData, clientData, sig, err
}

// SignIn registers p with a one-time enrollment link (ORIGIN/enroll#TOKEN)
// and signs in with it, through the console's JSON API as its script
// does (no attestation: "none"); c keeps the session's cookie in its jar.
func SignIn(c *http.Client, link string, p *Passkey) error {
	origin, token, ok := strings.Cut(link, "/enroll#")
	if !ok {
		return fmt.Errorf("not an enrollment link: %q", link)
	}
	var reg struct {
		Handle  string `json:"handle"`
		Options struct {
			PublicKey struct {
				Challenge string `json:"challenge"`
				User      struct {
					ID string `json:"id"`
				} `json:"user"`
			} `json:"publicKey"`
		} `json:"options"`
	}
	if err := post(c, origin, "/api/enroll/begin", map[string]any{"token": token}, &reg); err != nil {
		return err
	}
	challenge, err := base64.RawURLEncoding.DecodeString(reg.Options.PublicKey.Challenge)
	if err != nil {
		return err
	}
	pub, err := p.cose()
	if err != nil {
		return err
	}
	raw := p.RawID()
	attested := append(binary.BigEndian.AppendUint16(make([]byte, 16), uint16(len(raw))), raw...) // AAGUID zero, the credential ID
	authData, clientData, _, err := p.sign("webauthn.create", challenge, append(attested, pub...))
	if err != nil {
		return err
	}
	object, err := webauthncbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		return err
	}
	enc := base64.RawURLEncoding.EncodeToString
	credential := map[string]any{"id": p.ID, "rawId": p.ID, "type": "public-key",
		"response": map[string]string{"attestationObject": enc(object), "clientDataJSON": enc(clientData)}}
	if err := post(c, origin, "/api/enroll/finish", map[string]any{"token": token, "handle": reg.Handle, "credential": credential}, nil); err != nil {
		return err
	}
	var login struct {
		Handle  string `json:"handle"`
		Options struct {
			PublicKey struct {
				Challenge string `json:"challenge"`
			} `json:"publicKey"`
		} `json:"options"`
	}
	if err := post(c, origin, "/api/login/begin", map[string]any{}, &login); err != nil {
		return err
	}
	if challenge, err = base64.RawURLEncoding.DecodeString(login.Options.PublicKey.Challenge); err != nil {
		return err
	}
	authData, clientData, sig, err := p.sign("webauthn.get", challenge, nil)
	if err != nil {
		return err
	}
	credential = map[string]any{"id": p.ID, "rawId": p.ID, "type": "public-key",
		"response": map[string]string{"authenticatorData": enc(authData), "clientDataJSON": enc(clientData), "signature": enc(sig), "userHandle": reg.Options.PublicKey.User.ID}}
	return post(c, origin, "/api/login/finish", map[string]any{"handle": login.Handle, "credential": credential}, nil)
}

// post sends body to the console's JSON API from its own origin and
// decodes the answer into out.
func post(c *http.Client, origin, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, origin+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", origin)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, answer)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(answer, out)
}
