package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

// hold applies the approval rules to a request the access rules allowed:
// one an approval rule holds is recorded for approval and answered
// FailedPrecondition naming its approval ID, never run. It returns nil
// when the request may run now. A request whose facts cannot be read
// (a malformed transaction, the key gone, the store down) is answered
// with that error: it neither runs unapproved nor is held.
func (s *Server) hold(ctx context.Context, rec *audit.Record, method string, op authz.Op, req any) error {
	if s.opts.Authz == nil || !s.opts.Authz.MayHold(op, rec.KeyID) {
		return nil
	}
	facts, summary, err := s.review(ctx, method, op, req)
	if err != nil {
		return err
	}
	rule := s.opts.Authz.Approval(op, rec.KeyID, facts)
	if rule == nil {
		return nil
	}
	if s.approvals == nil {
		return errs.New(errs.FailedPrecondition, "an approval rule holds this request, and this keyring store keeps no approvals")
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(req.(proto.Message))
	if err != nil {
		return errs.New(errs.InvalidArgument, "request: %v", err)
	}
	sum := sha256.Sum256(payload)
	now := s.opts.Now()
	r := &approval.Request{ID: approval.NewID(), Method: method, Operation: string(op), KeyID: rec.KeyID, Requester: rec.Identity,
		Payload: payload, PayloadSHA256: hex.EncodeToString(sum[:]), Summary: approval.Clip(summary),
		Approvers: rule.ApproverPatterns(), Quorum: rule.QuorumSize(), Created: now, Expires: now.Add(rule.Lifetime()), State: approval.Pending}
	held, err := s.approvals.Hold(ctx, r, now)
	if err != nil {
		return err
	}
	rec.Outcome, rec.ApprovalID = "held", held.ID
	s.metrics.approvals.WithLabelValues(string(op), "held").Inc()
	return heldError(held)
}

// heldError is the answer to a held request: FailedPrecondition naming
// the approval ID in its message and in an ErrorInfo detail.
func heldError(r *approval.Request) error {
	st := status.New(codes.FailedPrecondition, fmt.Sprintf("approval required: request %s waits for %d approval(s) from %s until %s; then: sigil approvals result %s",
		r.ID, r.Waiting(), strings.Join(r.Approvers, ", "), r.Expires.UTC().Format("2006-01-02T15:04:05Z"), r.ID))
	info := &errdetails.ErrorInfo{Reason: "APPROVAL_REQUIRED", Domain: "sigil", Metadata: map[string]string{"approval_id": r.ID, "quorum": strconv.Itoa(r.Quorum)}}
	if withInfo, err := st.WithDetails(info); err == nil {
		st = withInfo
	}
	return st.Err()
}

// review reads what approval rules test of a request and what its
// approvers are shown: a purpose's requests as the purpose describes
// them, the server's own (keys.admin) by the action they take.
func (s *Server) review(ctx context.Context, method string, op authz.Op, req any) (authz.Facts, []approval.Field, error) {
	head := []approval.Field{{Name: "key", Value: keyIDOf(req)}, {Name: "operation", Value: string(op)}}
	if p, ok := s.routes.servedBy[method]; ok {
		var f authz.Facts
		var sum []approval.Field
		if r, ok := p.(purpose.Reviewer); ok {
			var err error
			if f, sum, err = r.Review(ctx, s.deps, method, req); err != nil {
				return f, nil, err
			}
		}
		return f, append(head, sum...), nil
	}
	if op != authz.KeysAdmin {
		return authz.Facts{}, head, nil
	}
	f, sum, err := s.adminReview(ctx, method, req)
	return f, append(head, sum...), err
}

// adminActions names what each KeyService method changing a key does,
// for approval rules' actions.
var adminActions = map[string]string{
	sigilv1.KeyService_CreateKey_FullMethodName:           "create",
	sigilv1.KeyService_UpdateKeyPolicy_FullMethodName:     "update-policy",
	sigilv1.KeyService_RotateKey_FullMethodName:           "rotate",
	sigilv1.KeyService_RevokeGeneration_FullMethodName:    "revoke",
	sigilv1.KeyService_DisableKey_FullMethodName:          "disable",
	sigilv1.KeyService_EnableKey_FullMethodName:           "enable",
	sigilv1.KeyService_ScheduleKeyDeletion_FullMethodName: "schedule-deletion",
	sigilv1.KeyService_CancelKeyDeletion_FullMethodName:   "cancel-deletion",
	sigilv1.KeyService_UpdateKeyMetadata_FullMethodName:   "update-metadata",
}

// adminReview reads the action of a keys.admin request: which it is and,
// for a policy change, whether it loosens the key's policy. A request on
// a key that does not exist is answered (NotFound), not held.
func (s *Server) adminReview(ctx context.Context, method string, req any) (authz.Facts, []approval.Field, error) {
	action, ok := adminActions[method]
	if !ok {
		return authz.Facts{}, nil, errs.New(errs.Internal, "no action is named for %s", method)
	}
	if action != "create" {
		if _, err := s.opts.Keyring.Get(ctx, keyIDOf(req)); err != nil {
			return authz.Facts{}, nil, err
		}
	}
	f := authz.Facts{Actions: []string{action}}
	var sum []approval.Field
	switch r := req.(type) {
	case *sigilv1.RotateKeyRequest:
		if r.GetImmediate() {
			f.Actions = []string{"rotate-now"}
		}
	case *sigilv1.RevokeGenerationRequest:
		sum = append(sum, approval.Field{Name: "generation", Value: strconv.Itoa(int(r.GetGeneration()))})
	case *sigilv1.ScheduleKeyDeletionRequest:
		sum = append(sum, approval.Field{Name: "window", Value: r.GetWindow().AsDuration().String()})
	case *sigilv1.UpdateKeyPolicyRequest:
		loosens, policy, err := s.keySvc.loosens(ctx, r)
		if err != nil {
			return f, nil, err
		}
		if loosens {
			f.Actions = append(f.Actions, "loosen-policy")
		}
		sum = append(sum, approval.Field{Name: "new policy", Value: policy})
	}
	return f, append([]approval.Field{{Name: "action", Value: strings.Join(f.Actions, ", ")}}, sum...), nil
}

// loosens reports whether the policy an UpdateKeyPolicy request asks for
// allows something the key's policy does not (any change does, for a
// purpose that cannot tell), and spells the new policy.
func (s *keyService) loosens(ctx context.Context, req *sigilv1.UpdateKeyPolicyRequest) (bool, string, error) {
	k, p, requested, err := s.requestedUpdate(ctx, req)
	if err != nil {
		return false, "", err
	}
	updated, err := p.UpdatePolicy(k.Policy(), requested)
	if err != nil {
		return false, "", err
	}
	b, _ := json.Marshal(updated)
	l, ok := p.(purpose.Loosener)
	return !ok || l.Loosens(k.Policy(), updated), string(b), nil
}
