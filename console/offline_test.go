package console

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"

	"github.com/sigil-hsm/sigil/internal/audit"
)

// softPasskey is a passkey in software: a P-256 key that makes WebAuthn
// assertions as an authenticator would (user present and verified).
type softPasskey struct {
	id  string
	key *ecdsa.PrivateKey
	rp  Relying
}

func newSoftPasskey(t *testing.T, rp Relying) *softPasskey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &softPasskey{id: base64.RawURLEncoding.EncodeToString([]byte("cred-" + t.Name())), key: k, rp: rp}
}

// cose is the passkey's public key as WebAuthn registers it.
func (p *softPasskey) cose(t *testing.T) []byte {
	b, err := p.key.PublicKey.Bytes()
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

// assert signs challenge as the browser and authenticator would.
func (p *softPasskey) assert(t *testing.T, challenge []byte) string {
	clientData, _ := json.Marshal(map[string]string{"type": "webauthn.get", "challenge": base64.RawURLEncoding.EncodeToString(challenge), "origin": p.rp.Origin})
	rpHash := sha256.Sum256([]byte(p.rp.RPID))
	authData := append(rpHash[:], 0x05, 0, 0, 0, 1) // flags UP|UV, counter 1
	cdHash := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(append([]byte{}, authData...), cdHash[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, p.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(Assertion{CredentialID: p.id, AuthenticatorData: authData, ClientDataJSON: clientData, Signature: sig})
	return string(b)
}

// From the audit records alone: a decision's assertion verifies against
// its passkey's registration record; one moved to another approval or
// decision, by another identity, whose registration is missing, or
// signed by another passkey, does not.
func TestAuditCheckFromTheRecordsAlone(t *testing.T) {
	rp := Relying{Origin: "https://sigil.example.org:7444", RPID: "sigil.example.org"}
	alice, mallory := newSoftPasskey(t, rp), newSoftPasskey(t, rp)
	mallory.id = alice.id // a key that is not the registered one, under its ID
	reg := audit.Record{Time: time.Now(), Operation: OpRegister, Outcome: "allowed", Identities: []string{"spiffe://example.org/officer/alice"},
		Details: map[string]string{DetailCredential: alice.id, DetailPublicKey: base64.RawURLEncoding.EncodeToString(alice.cose(t)), DetailOrigin: rp.Origin, DetailRPID: rp.RPID}}
	decision := func(who *softPasskey, identity, approvalID, decision, signedFor string) audit.Record {
		return audit.Record{Time: time.Now(), Operation: "approvals.approve", Outcome: "allowed", Identity: identity, ApprovalID: approvalID,
			Details: map[string]string{DetailAssertion: who.assert(t, Challenge(signedFor, decision, "ab12")), DetailDecision: decision, DetailPayload: "ab12"}}
	}
	good := decision(alice, "spiffe://example.org/officer/alice", "ap-1", "approve", "ap-1")
	if n, problems := AuditCheck([]audit.Record{reg, good}); n != 1 || len(problems) != 0 {
		t.Fatalf("a good decision: %d verified, %v", n, problems)
	}
	moved := good
	moved.ApprovalID = "ap-2"
	denied := good
	denied.Details = map[string]string{DetailAssertion: good.Details[DetailAssertion], DetailDecision: "deny", DetailPayload: "ab12"}
	for name, c := range map[string]struct {
		recs []audit.Record
		want string
	}{
		"moved to another approval":   {[]audit.Record{reg, moved}, "challenge"},
		"turned into a denial":        {[]audit.Record{reg, denied}, "challenge"},
		"by another identity":         {[]audit.Record{reg, decision(alice, "spiffe://example.org/mallory", "ap-1", "approve", "ap-1")}, "registered for"},
		"no registration":             {[]audit.Record{good}, "no registration"},
		"another key under the ID":    {[]audit.Record{reg, decision(mallory, "spiffe://example.org/officer/alice", "ap-1", "approve", "ap-1")}, "signature"},
		"on another console's origin": {[]audit.Record{reg, decision(newSoftPasskeyAt(t, alice, Relying{Origin: "https://evil.example", RPID: rp.RPID}), "spiffe://example.org/officer/alice", "ap-1", "approve", "ap-1")}, "origin"},
	} {
		n, problems := AuditCheck(c.recs)
		if n != 0 || len(problems) != 1 || !strings.Contains(problems[0], c.want) {
			t.Errorf("%s: %d verified, %v (want a problem saying %q)", name, n, problems, c.want)
		}
	}
}

// newSoftPasskeyAt is p making assertions on another relying party.
func newSoftPasskeyAt(_ *testing.T, p *softPasskey, rp Relying) *softPasskey {
	return &softPasskey{id: p.id, key: p.key, rp: rp}
}

// Genuine decisions verify offline though the record's own identity list
// cuts a long identity, and though the console moved to another origin
// after the registration (the decision names the origin the server
// checked; the passkey is bound to the RP ID) — found by a review.
func TestAuditCheckLongIdentityAndMovedConsole(t *testing.T) {
	rp := Relying{Origin: "https://sigil.example.org:7444", RPID: "sigil.example.org"}
	long := "spiffe://example.org/officer/" + strings.Repeat("a", 140)
	p := newSoftPasskey(t, rp)
	reg := audit.Record{Time: time.Now(), Operation: OpRegister, Outcome: "allowed", Identities: []string{long[:128] + "…"},
		Details: map[string]string{DetailIdentity: long, DetailCredential: p.id, DetailPublicKey: base64.RawURLEncoding.EncodeToString(p.cose(t)), DetailOrigin: rp.Origin, DetailRPID: rp.RPID}}
	moved := &softPasskey{id: p.id, key: p.key, rp: Relying{Origin: "https://sigil.example.org", RPID: rp.RPID}}
	dec := audit.Record{Time: time.Now(), Operation: "approvals.approve", Outcome: "allowed", Identity: long, ApprovalID: "ap-1",
		Details: map[string]string{DetailAssertion: moved.assert(t, Challenge("ap-1", "approve", "ab12")), DetailDecision: "approve", DetailPayload: "ab12", DetailOrigin: moved.rp.Origin}}
	if n, problems := AuditCheck([]audit.Record{reg, dec}); n != 1 || len(problems) != 0 {
		t.Fatalf("%d verified, %v", n, problems)
	}
}
