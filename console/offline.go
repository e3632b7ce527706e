package console

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/sigil-hsm/sigil/internal/audit"
)

// OpRegister is the audit operation of a passkey's registration; its
// record's details hold what an offline check of the passkey's
// assertions needs (registration).
const OpRegister = "console.register"

// Details of the audit records AuditCheck reads: a registration's, and a
// decision's (which the server writes with the assertion it verified).
const (
	DetailIdentity   = "identity" // the enrolled identity, whole (a record's own list may cut a long one)
	DetailCredential = "credential_id"
	DetailPublicKey  = "public_key" // COSE, base64url
	DetailOrigin     = "origin"     // a registration's; a decision's is the origin the server checked
	DetailRPID       = "rp_id"
	DetailAssertion  = "passkey_assertion"
	DetailDecision   = "decision"
	DetailPayload    = "payload_sha256"
)

// registration is the details of passkey p's registration record.
func registration(p *Passkey, origin, rpID string) []string {
	return []string{DetailIdentity, p.Identity, DetailCredential, p.ID(), DetailPublicKey, base64.RawURLEncoding.EncodeToString(p.Credential.PublicKey),
		DetailOrigin, origin, DetailRPID, rpID}
}

// registered is a registration as its audit record holds it.
type registered struct {
	identity string
	pub      []byte
	rp       Relying
}

// AuditCheck checks, from audit records alone, every passkey assertion
// a decision record holds: against the registration record of its
// credential among recs (the same identity, the origin and RP ID it was
// registered on, its public key), over the challenge the decision's
// approval ID, decision and request hash make. It returns how many it
// verified and what it could not. Revocations are not weighed: a
// decision is only recorded when the server found its passkey enrolled.
func AuditCheck(recs []audit.Record) (int, []string) {
	creds := map[string]registered{}
	for _, r := range recs {
		if r.Operation != OpRegister || r.Outcome != "allowed" {
			continue
		}
		pub, err := base64.RawURLEncoding.DecodeString(r.Details[DetailPublicKey])
		if err == nil && r.Details[DetailCredential] != "" {
			creds[r.Details[DetailCredential]] = registered{identity: recordedIdentity(r), pub: pub, rp: Relying{Origin: r.Details[DetailOrigin], RPID: r.Details[DetailRPID]}}
		}
	}
	verified := 0
	var problems []string
	for _, r := range recs {
		raw, ok := r.Details[DetailAssertion]
		if !ok {
			continue
		}
		if err := checkDecision(r, raw, creds); err != nil {
			problems = append(problems, fmt.Sprintf("record %s (%s by %s at %s): %v", r.RequestID, r.Operation, r.Identity, r.Time.Format("2006-01-02T15:04:05Z"), err))
			continue
		}
		verified++
	}
	return verified, problems
}

// checkDecision checks one decision record's assertion raw.
func checkDecision(r audit.Record, raw string, creds map[string]registered) error {
	var a Assertion
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return fmt.Errorf("not an assertion: %v", err)
	}
	reg, ok := creds[a.CredentialID]
	switch {
	case !ok:
		return fmt.Errorf("no registration of passkey %s in the files", a.CredentialID)
	case reg.identity == "" || reg.identity != r.Identity:
		return fmt.Errorf("passkey %s was registered for %q", a.CredentialID, reg.identity)
	case r.ApprovalID == "" || r.Details[DetailDecision] == "" || r.Details[DetailPayload] == "":
		return fmt.Errorf("the record does not name the approval, decision and request it decided")
	}
	rp := reg.rp
	if o := r.Details[DetailOrigin]; o != "" { // the console moved since the registration: the origin the server checked
		rp.Origin = o
	}
	return CheckAssertion(&a, reg.pub, Challenge(r.ApprovalID, r.Details[DetailDecision], r.Details[DetailPayload]), rp)
}

// recordedIdentity is the one identity a record was made for: the rule's,
// or the only one the caller had (a registration is recorded as the
// identity enrolled).
func recordedIdentity(r audit.Record) string {
	if id := r.Details[DetailIdentity]; id != "" {
		return id
	}
	if r.Identity == "" && len(r.Identities) == 1 {
		return r.Identities[0]
	}
	return r.Identity
}
