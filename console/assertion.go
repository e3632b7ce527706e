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
// not revoked, on this console's origin and RP ID, with the user
// verified, over exactly challenge, and signed by the passkey's key.
func (s Store) Verify(ctx context.Context, raw []byte, identity string, challenge []byte, rp Relying) (*Assertion, error) {
	var a Assertion
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, errs.New(errs.InvalidArgument, "passkey: not an assertion: %v", err)
	}
	refuse := func(why string) (*Assertion, error) {
		return nil, errs.New(errs.PermissionDenied, "passkey: the assertion does not verify: %s", why)
	}
	p, err := s.Passkey(ctx, a.CredentialID)
	if err != nil || p.Revoked || p.Identity != identity {
		return refuse("no passkey of this identity by that ID")
	}
	var cd protocol.CollectedClientData
	if err := json.Unmarshal(a.ClientDataJSON, &cd); err != nil {
		return refuse("client data")
	}
	if cd.Type != protocol.AssertCeremony || cd.Origin != rp.Origin || cd.Challenge != base64.RawURLEncoding.EncodeToString(challenge) {
		return refuse("another ceremony, origin or challenge (another approval, decision or request)")
	}
	var ad protocol.AuthenticatorData
	if err := ad.Unmarshal(a.AuthenticatorData); err != nil {
		return refuse("authenticator data")
	}
	rpHash := sha256.Sum256([]byte(rp.RPID))
	if !bytes.Equal(ad.RPIDHash, rpHash[:]) || !ad.Flags.UserPresent() || !ad.Flags.UserVerified() {
		return refuse("another relying party, or the user not present and verified")
	}
	key, err := webauthncose.ParsePublicKey(p.Credential.PublicKey)
	if err != nil {
		return refuse("the enrolled public key")
	}
	cdHash := sha256.Sum256(a.ClientDataJSON)
	if ok, err := webauthncose.VerifySignature(key, append(bytes.Clone(a.AuthenticatorData), cdHash[:]...), a.Signature); err != nil || !ok {
		return refuse("the signature")
	}
	return &a, nil
}
