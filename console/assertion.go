package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Assertion is a passkey's signature over a decision, as the console
// sends it with the decision and the audit record keeps it.
type Assertion struct {
	CredentialID      string                    `json:"credential_id"`
	AuthenticatorData protocol.URLEncodedBase64 `json:"authenticator_data"`
	ClientDataJSON    protocol.URLEncodedBase64 `json:"client_data_json"`
	Signature         protocol.URLEncodedBase64 `json:"signature"`
}

// Relying is the console's WebAuthn relying party, as an assertion made
// on it names it.
type Relying struct{ Origin, RPID string }

// Verify checks an assertion anyone may have sent (a gRPC client can
// attach one to a decision): made by a passkey enrolled for identity and
// not revoked, and valid for it (CheckAssertion).
func (s Store) Verify(ctx context.Context, raw []byte, identity string, challenge []byte, rp Relying) (*Assertion, error) {
	var a Assertion
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, errs.New(errs.InvalidArgument, "passkey: not an assertion: %v", err)
	}
	p, err := s.Passkey(ctx, a.CredentialID)
	if err != nil || p.Revoked || p.Identity != identity {
		return nil, refused("no passkey of this identity by that ID")
	}
	if err := CheckAssertion(&a, p.Credential.PublicKey, challenge, rp); err != nil {
		return nil, err
	}
	return &a, nil
}

func refused(why string) error {
	return errs.New(errs.PermissionDenied, "passkey: the assertion does not verify: %s", why)
}

// CheckAssertion checks that a was made on rp's origin and RP ID, with
// the user present and verified, over exactly challenge, and signed by
// the passkey whose COSE public key is pub: what a decision's assertion
// must be, checked by the server when it is made and, from the audit
// records alone, by AuditCheck.
func CheckAssertion(a *Assertion, pub, challenge []byte, rp Relying) error {
	var cd protocol.CollectedClientData
	if err := json.Unmarshal(a.ClientDataJSON, &cd); err != nil {
		return refused("client data")
	}
	if cd.Type != protocol.AssertCeremony || cd.Origin != rp.Origin || cd.Challenge != base64.RawURLEncoding.EncodeToString(challenge) {
		return refused("another ceremony, origin or challenge (another approval, decision or request)")
	}
	var ad protocol.AuthenticatorData
	if err := ad.Unmarshal(a.AuthenticatorData); err != nil {
		return refused("authenticator data")
	}
	rpHash := sha256.Sum256([]byte(rp.RPID))
	if !bytes.Equal(ad.RPIDHash, rpHash[:]) || !ad.Flags.UserPresent() || !ad.Flags.UserVerified() {
		return refused("another relying party, or the user not present and verified")
	}
	key, err := webauthncose.ParsePublicKey(pub)
	if err != nil {
		return refused("the enrolled public key")
	}
	cdHash := sha256.Sum256(a.ClientDataJSON)
	if ok, err := webauthncose.VerifySignature(key, append(bytes.Clone(a.AuthenticatorData), cdHash[:]...), a.Signature); err != nil || !ok {
		return refused("the signature")
	}
	return nil
}
