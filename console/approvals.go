package console

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/sigil-hsm/sigil/internal/errs"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// Challenge is what an approver's passkey signs to approve or deny: the
// approval, the decision and the SHA-256 of the request's bytes, so an
// assertion made for one can be replayed for no other approval, decision
// or request.
func Challenge(approvalID, decision, payloadSHA256 string) []byte {
	sum := sha256.Sum256([]byte("sigil approval\x00" + approvalID + "\x00" + decision + "\x00" + payloadSHA256))
	return sum[:]
}

// approvalsPage lists the held requests the identity may see, as it
// would with sigil approvals list.
func (c *Console) approvalsPage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := c.o.Access.As(r.Context(), s.id, r.RemoteAddr)
	var resp sigilv1.ListApprovalsResponse
	err := c.o.Access.Invoke(ctx, sigilv1.ApprovalService_ListApprovals_FullMethodName, &sigilv1.ListApprovalsRequest{State: "pending"}, &resp)
	type row struct {
		*sigilv1.Approval
		Approved []string
		Left     string
	}
	var rows []row
	for _, a := range resp.GetApprovals() {
		var by []string
		for _, v := range a.GetApprovals() {
			by = append(by, v.GetIdentity())
		}
		rows = append(rows, row{Approval: a, Approved: by, Left: time.Until(a.GetExpiresAt().AsTime()).Round(time.Second).String()})
	}
	data := map[string]any{"Identity": s.id.String(), "Approvals": rows}
	if err != nil {
		data["Error"] = err.Error()
	}
	c.render(w, "approvals", data)
}

// keysPage lists the keys the identity may read, filtered by purpose,
// a generation's state, a label and the owner, a page at a time.
func (c *Console) keysPage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := c.o.Access.As(r.Context(), s.id, r.RemoteAddr)
	q := r.URL.Query()
	req := &sigilv1.ListKeysRequest{PageSize: keysPerPage, PageToken: q.Get("page"), Purpose: q.Get("purpose"), State: q.Get("state"), Owner: q.Get("owner")}
	if l := q.Get("label"); l != "" {
		req.Labels = []string{l}
	}
	var resp sigilv1.ListKeysResponse
	err := c.o.Access.Invoke(ctx, sigilv1.KeyService_ListKeys_FullMethodName, req, &resp)
	data := map[string]any{"Identity": s.id.String(), "Keys": resp.GetKeys(), "Total": resp.GetTotalSize(), "Filter": req, "Label": q.Get("label"),
		"Purposes": []string{"", "jwt", "eth", "raw"}, "States": []string{"", "pending", "active", "retiring", "retired", "revoked", "destroyed"}}
	if t := resp.GetNextPageToken(); t != "" {
		q.Set("page", t)
		data["Next"] = "/keys?" + q.Encode()
	}
	if err != nil {
		w.WriteHeader(httpStatus(err))
		data["Error"] = publicError(err)
	}
	c.render(w, "keys", data)
}

// keysPerPage is how many keys the keys page shows at once.
const keysPerPage = 100

// activeSince is when key k's active generation started signing.
func activeSince(k *sigilv1.Key) string {
	for _, g := range k.GetGenerations() {
		if g.GetState() == "active" && g.GetActivatedTime().IsValid() {
			return g.GetActivatedTime().AsTime().UTC().Format("2006-01-02 15:04")
		}
	}
	return ""
}

// keyPage shows one key the identity may read: its facts, policy,
// generations and rotation timeline.
func (c *Console) keyPage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := c.o.Access.As(r.Context(), s.id, r.RemoteAddr)
	var resp sigilv1.GetKeyResponse
	data := map[string]any{"Identity": s.id.String()}
	if err := c.o.Access.Invoke(ctx, sigilv1.KeyService_GetKey_FullMethodName, &sigilv1.GetKeyRequest{Id: r.PathValue("id")}, &resp); err != nil {
		w.WriteHeader(httpStatus(err))
		data["Error"] = publicError(err)
	} else {
		data["Key"], data["Timeline"] = resp.GetKey(), timelineOf(resp.GetKey(), c.o.Now())
	}
	c.render(w, "key", data)
}

// decisionBegin reads the approval (as the identity: one it may not see
// is refused) and asks its passkey to sign the decision's challenge.
func (c *Console) decisionBegin(w http.ResponseWriter, r *http.Request) (any, error) {
	s := c.session(r)
	if s == nil {
		return nil, errs.New(errs.Unauthenticated, "sign in first")
	}
	b, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if b.Decision != "approve" && b.Decision != "deny" {
		return nil, errs.New(errs.InvalidArgument, "decision: approve or deny")
	}
	var got sigilv1.GetApprovalResponse
	ctx := c.o.Access.As(r.Context(), s.id, r.RemoteAddr)
	if err := c.o.Access.Invoke(ctx, sigilv1.ApprovalService_GetApproval_FullMethodName, &sigilv1.GetApprovalRequest{ApprovalId: b.ApprovalID}, &got); err != nil {
		return nil, err
	}
	u, err := c.userOf(r, s.id.String())
	if err != nil {
		return nil, err
	}
	if len(u.creds) == 0 {
		return nil, errs.New(errs.PermissionDenied, "no passkey of yours is enrolled")
	}
	a := got.GetApproval()
	opts, data, err := c.wa.BeginLogin(u, webauthn.WithChallenge(Challenge(a.GetApprovalId(), b.Decision, a.GetPayloadSha256())),
		webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "starting the approval")
	}
	h, err := c.remember(&ceremony{data: *data, who: s.id.String(), action: b.Decision + " " + a.GetApprovalId() + " " + a.GetPayloadSha256()})
	if err != nil {
		return nil, err
	}
	return map[string]any{"handle": h, "options": opts}, nil
}

// decisionFinish checks the passkey's assertion over the challenge of
// exactly this approval, decision and request, then decides through the
// access path as the identity, with the assertion on the record.
func (c *Console) decisionFinish(w http.ResponseWriter, r *http.Request) (any, error) {
	s := c.session(r)
	if s == nil {
		return nil, errs.New(errs.Unauthenticated, "sign in first")
	}
	b, err := readBody(r)
	if err != nil {
		return nil, err
	}
	cer, err := c.take(b.Handle)
	if err != nil {
		return nil, err
	}
	parts := strings.Fields(cer.action)
	if len(parts) != 3 || cer.who != s.id.String() || parts[1] != b.ApprovalID || parts[0] != b.Decision {
		return nil, errs.New(errs.PermissionDenied, "this assertion was asked for another approval or decision")
	}
	u, err := c.userOf(r, s.id.String())
	if err != nil {
		return nil, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(b.Credential)
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "the assertion: %v", err)
	}
	cred, err := c.wa.ValidateLogin(u, cer.data, parsed)
	if err != nil {
		return nil, errs.New(errs.PermissionDenied, "the passkey's assertion does not verify for this approval")
	}
	if err := c.o.Store.touch(r.Context(), encodeID(cred.ID), cred); err != nil {
		return nil, err
	}
	evidence, _ := json.Marshal(map[string]any{"credential_id": encodeID(cred.ID), "authenticator_data": parsed.Raw.AssertionResponse.AuthenticatorData,
		"client_data_json": parsed.Raw.AssertionResponse.ClientDataJSON, "signature": parsed.Raw.AssertionResponse.Signature})
	ctx := c.o.Access.As(r.Context(), s.id, r.RemoteAddr)
	if b.Decision == "deny" {
		var out sigilv1.DenyResponse
		err = c.o.Access.Invoke(ctx, sigilv1.ApprovalService_Deny_FullMethodName, &sigilv1.DenyRequest{ApprovalId: parts[1], Reason: b.Reason, Passkey: evidence}, &out)
		return map[string]string{"state": "denied"}, err
	}
	var out sigilv1.ApproveResponse
	err = c.o.Access.Invoke(ctx, sigilv1.ApprovalService_Approve_FullMethodName, &sigilv1.ApproveRequest{ApprovalId: parts[1], PayloadSha256: parts[2], Passkey: evidence}, &out)
	return map[string]string{"state": out.GetApproval().GetState()}, err
}
