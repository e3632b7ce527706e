package console

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
)

// user is an identity as WebAuthn sees it: its handle is the SHA-256 of
// the identity string, its credentials its passkeys not revoked.
type user struct {
	id    string
	creds []webauthn.Credential
}

func (u *user) WebAuthnID() []byte                         { h := sha256.Sum256([]byte(u.id)); return h[:] }
func (u *user) WebAuthnName() string                       { return u.id }
func (u *user) WebAuthnDisplayName() string                { return u.id }
func (u *user) WebAuthnCredentials() []webauthn.Credential { return u.creds }

// userOf is identity id with its live passkeys.
func (c *Console) userOf(r *http.Request, id string) (*user, error) {
	all, err := c.o.Store.Passkeys(r.Context())
	if err != nil {
		return nil, err
	}
	u := &user{id: id}
	for _, p := range all {
		if p.Identity == id && !p.Revoked {
			u.creds = append(u.creds, p.Credential)
		}
	}
	return u, nil
}

// body reads the JSON request: a handle and, to finish a ceremony, the
// browser's credential (kept raw for the WebAuthn library to parse).
type body struct {
	Token      string          `json:"token"`
	Handle     string          `json:"handle"`
	ApprovalID string          `json:"approval_id"`
	Decision   string          `json:"decision"`
	Reason     string          `json:"reason"`
	Credential json.RawMessage `json:"credential"`
}

func readBody(r *http.Request) (*body, error) {
	var b body
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		return nil, errs.New(errs.InvalidArgument, "request: %v", err)
	}
	return &b, nil
}

// credentialRequest is the browser's credential as the WebAuthn library
// reads it, from a request body of its own.
func credentialRequest(r *http.Request, cred json.RawMessage) *http.Request {
	out := r.Clone(r.Context())
	out.Body = io.NopCloser(bytes.NewReader(cred))
	out.ContentLength = int64(len(cred))
	return out
}

// enrollBegin starts registering a passkey for the identity an
// enrollment link names (the link is spent only when it finishes).
func (c *Console) enrollBegin(w http.ResponseWriter, r *http.Request) (any, error) {
	b, err := readBody(r)
	if err != nil {
		return nil, err
	}
	id, err := c.o.Store.peek(r.Context(), b.Token, c.o.Now())
	if err != nil {
		return nil, err
	}
	u, err := c.userOf(r, id)
	if err != nil {
		return nil, err
	}
	opts, data, err := c.wa.BeginRegistration(u, webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementRequired),
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{ResidentKey: protocol.ResidentKeyRequirementRequired, UserVerification: protocol.VerificationRequired}),
		webauthn.WithExclusions(webauthn.Credentials(u.creds).CredentialDescriptors()))
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "starting the registration")
	}
	h, err := c.remember(&ceremony{data: *data, token: b.Token, who: id})
	if err != nil {
		return nil, err
	}
	return map[string]any{"handle": h, "options": opts}, nil
}

// enrollFinish checks the new credential, spends the link and stores the
// passkey; it is audited through the access path's record of the
// identity's first call, and logged.
func (c *Console) enrollFinish(w http.ResponseWriter, r *http.Request) (any, error) {
	b, err := readBody(r)
	if err != nil {
		return nil, err
	}
	cer, err := c.take(b.Handle)
	if err != nil || cer.token != b.Token || cer.token == "" {
		return nil, errs.New(errs.PermissionDenied, "this registration was not started with this link")
	}
	u, err := c.userOf(r, cer.who)
	if err != nil {
		return nil, err
	}
	cred, err := c.wa.FinishRegistration(u, cer.data, credentialRequest(r, b.Credential))
	if err != nil {
		return nil, errs.New(errs.PermissionDenied, "the passkey was not registered: %v", err)
	}
	id, err := c.o.Store.redeem(r.Context(), b.Token, c.o.Now())
	if err != nil {
		return nil, err
	}
	p := &Passkey{Identity: id, Credential: *cred, Created: c.o.Now().UTC()}
	err = c.o.Store.AddPasskey(r.Context(), p)
	if who, perr := identity.Parse(id); perr == nil {
		if rerr := c.o.Access.Record(c.o.Access.As(r.Context(), who, r.RemoteAddr), OpRegister, "", err, registration(p, c.o.Origin, c.o.RPID)...); err == nil {
			err = rerr
		}
	}
	if err != nil {
		return nil, err
	}
	c.o.Log.Info("console: passkey registered", "identity", id, "credential", p.ID())
	return map[string]string{"identity": id, "credential_id": p.ID()}, nil
}

// loginBegin starts a passkey sign-in (a discoverable credential: the
// browser offers the passkeys it holds for this site).
func (c *Console) loginBegin(w http.ResponseWriter, r *http.Request) (any, error) {
	opts, data, err := c.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "starting the sign-in")
	}
	h, err := c.remember(&ceremony{data: *data})
	if err != nil {
		return nil, err
	}
	return map[string]any{"handle": h, "options": opts}, nil
}

// loginFinish checks the assertion against a passkey not revoked and
// starts a session as its identity.
func (c *Console) loginFinish(w http.ResponseWriter, r *http.Request) (any, error) {
	b, err := readBody(r)
	if err != nil {
		return nil, err
	}
	cer, err := c.take(b.Handle)
	if err != nil || cer.action != "" || cer.token != "" {
		return nil, errs.New(errs.PermissionDenied, "this sign-in was not started here")
	}
	var found *Passkey
	handler := func(rawID, userHandle []byte) (webauthn.User, error) {
		p, err := c.o.Store.Passkey(r.Context(), encodeID(rawID))
		if err != nil || p.Revoked {
			return nil, errs.New(errs.PermissionDenied, "unknown or revoked passkey")
		}
		found = p
		return &user{id: p.Identity, creds: []webauthn.Credential{p.Credential}}, nil
	}
	cred, err := c.wa.FinishDiscoverableLogin(handler, cer.data, credentialRequest(r, b.Credential))
	if err != nil || found == nil {
		refused := errs.New(errs.PermissionDenied, "sign-in refused")
		c.o.Access.Record(r.Context(), "console.signin", "", refused) // no identity: the attempt, from its address
		return nil, refused
	}
	if err := c.o.Store.touch(r.Context(), found.ID(), cred); err != nil {
		return nil, err
	}
	who, err := identity.Parse(found.Identity)
	if err != nil {
		return nil, errs.New(errs.PermissionDenied, "sign-in refused")
	}
	if err := c.o.Access.Record(c.o.Access.As(r.Context(), who, r.RemoteAddr), "console.signin", "", nil); err != nil {
		return nil, err
	}
	if err := c.startSession(w, who, found.ID()); err != nil {
		return nil, err
	}
	c.o.Log.Info("console: signed in", "identity", found.Identity, "credential", found.ID())
	return map[string]string{"identity": found.Identity}, nil
}
