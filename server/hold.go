package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

// hold applies the approval rules to a request the access rules allowed:
// one an approval rule holds is recorded for approval and answered
// FailedPrecondition naming its approval ID, never run. A request whose
// facts cannot be read (a malformed transaction, no such key, the store
// down) is answered with that error: it neither runs unapproved nor is
// held. It returns the context a request that may run now runs with (see
// guardLoosening).
func (s *Server) hold(ctx context.Context, rec *audit.Record, method string, op authz.Op, req any) (context.Context, error) {
	target := targetOf(rec)
	if s.opts.Authz == nil || s.routes.batches[method] || !s.opts.Authz.MayHold(op, target) && !alwaysHeld[method] {
		return ctx, nil
	}
	if err := s.nameFreeze(ctx, req); err != nil {
		return ctx, err
	}
	facts, _, err := s.review(ctx, method, op, req, s.testedOn(op, target))
	if err != nil {
		return ctx, err
	}
	ctx = s.guardLoosening(ctx, method, rec.KeyID, facts.Actions)
	rule, err := s.approvalRule(method, op, target, facts)
	if err != nil || rule == nil {
		return ctx, err
	}
	_, summary, err := s.review(ctx, method, op, req, everyCondition) // held: approvers read all there is
	if err != nil {
		return ctx, err
	}
	if s.approvals == nil {
		return ctx, errs.New(errs.FailedPrecondition, "an approval rule holds this request, and this keyring store keeps no approvals")
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(req.(proto.Message))
	if err != nil {
		return ctx, errs.New(errs.InvalidArgument, "request: %v", err)
	}
	sum := sha256.Sum256(payload)
	now := s.opts.Now()
	r := &approval.Request{ID: approval.NewID(), Method: method, Operation: string(op), KeyID: rec.KeyID, Namespace: rec.Namespace, Requester: rec.Identity,
		Requesters: identity.Strings(identities(ctx)), Idempotent: idempotent[method], Actions: facts.Actions,
		Payload: payload, PayloadSHA256: hex.EncodeToString(sum[:]), Summary: approval.Clip(summary),
		Approvers: rule.ApproverPatterns(), Quorum: rule.QuorumSize(), Passkey: rule.RequiresPasskey(), Created: now, Expires: now.Add(rule.Lifetime()), State: approval.Pending}
	rec.RequestSHA256 = r.PayloadSHA256
	held, err := s.approvals.Hold(ctx, r, now)
	if err != nil {
		return ctx, err
	}
	rec.Outcome, rec.ApprovalID = "held", held.ID
	s.metrics.approvals.WithLabelValues(string(op), "held").Inc()
	return ctx, heldError(held)
}

// idempotent are the methods whose second run has the first's effect
// whatever happened in between, so an approved request of theirs whose
// run was interrupted runs again: a transaction is answered by the nonce
// guard, a revocation cannot be undone. Any other is failed as
// interrupted instead: a second disable or enable, say, would replay a
// stale decision over a newer one.
var idempotent = map[string]bool{
	sigilv1.EthereumService_SignTransaction_FullMethodName: true,
	sigilv1.KeyService_RevokeGeneration_FullMethodName:     true,
}

// looseningKey marks the context of a policy change on a key whose
// loosening changes approval rules hold: its value says whether this
// change was judged to loosen (and so was held and approved as such).
type looseningKey struct{}

// guardLoosening marks ctx for a policy change when approval rules would
// hold a loosening one of the key: the change then applies only if,
// against the policy it actually replaces (checked inside the atomic
// update), it loosens no more than it was judged to; a change judged not
// to loosen cannot undo a tightening made meanwhile.
func (s *Server) guardLoosening(ctx context.Context, method, keyID string, actions []string) context.Context {
	if method != sigilv1.KeyService_UpdateKeyPolicy_FullMethodName ||
		s.opts.Authz.Approval(authz.KeysAdmin, keyID, authz.Facts{Actions: []string{actionUpdatePolicy, actionLoosenPolicy}}) == nil {
		return ctx
	}
	return context.WithValue(ctx, looseningKey{}, slices.Contains(actions, actionLoosenPolicy))
}

// The admin actions the server reads of a request beyond its method.
const (
	actionUpdatePolicy = "update-policy"
	actionLoosenPolicy = "loosen-policy"
	actionRotateNow    = "rotate-now"
)

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
// them, the server's own (keys.admin) by the action they take. A request
// that names a key that does not exist (or is of another purpose) is
// answered, not held.
func (s *Server) review(ctx context.Context, method string, op authz.Op, req any, tested func(string) bool) (authz.Facts, []approval.Field, error) {
	head := []approval.Field{{Name: "namespace", Value: namespace.FromContext(ctx)}, {Name: "key", Value: namespace.Local(keyIDOf(req))}, {Name: "operation", Value: string(op)}}
	if err := s.mustExist(ctx, method, req); err != nil {
		return authz.Facts{}, nil, err
	}
	if p, ok := s.routes.servedBy[method]; ok {
		var f authz.Facts
		var sum []approval.Field
		if r, ok := p.(purpose.Reviewer); ok {
			var err error
			if f, sum, err = r.Review(ctx, s.deps, method, req, tested); err != nil {
				return f, nil, err
			}
		}
		return f, append(head, sum...), nil
	}
	if op == authz.NamespacesAdmin {
		return authz.Facts{Actions: []string{namespaceActions[method]}}, append(head, approval.Field{Name: "action", Value: namespaceActions[method]}), nil
	}
	if op != authz.KeysAdmin {
		return authz.Facts{}, head, nil
	}
	f, sum, err := s.adminReview(ctx, method, req)
	return f, append(head, sum...), err
}

// testedOn says which conditions the approval rules on op and key keyID
// test, so a review reads only the facts they need.
func (s *Server) testedOn(op authz.Op, keyID string) func(string) bool {
	return func(cond string) bool { return s.opts.Authz.Tests(op, keyID, cond) }
}

// everyCondition asks a review for every fact (for a summary).
func everyCondition(string) bool { return true }

// mustExist refuses a request on a key that does not exist, or that its
// method's purpose does not serve; a key creation and a keyless request
// name none.
func (s *Server) mustExist(ctx context.Context, method string, req any) error {
	id, names := keyIDField(req)
	if !names || id == "" || method == sigilv1.KeyService_CreateKey_FullMethodName || method == sigilv1.KeyService_GetImportParameters_FullMethodName {
		return nil // they name a key that need not exist yet
	}
	k, err := s.opts.Keyring.Get(ctx, id)
	if err != nil {
		return err
	}
	if p, ok := s.routes.servedBy[method]; ok && method != sigilv1.EthereumService_GetAddress_FullMethodName {
		return k.CheckPurpose(p.Name())
	}
	return nil
}

// adminActions names what each KeyService method changing a key does,
// for approval rules' actions.
var adminActions = map[string]string{
	sigilv1.KeyService_CreateKey_FullMethodName:           "create",
	sigilv1.KeyService_GetImportParameters_FullMethodName: "import-params",
	sigilv1.KeyService_UpdateKeyPolicy_FullMethodName:     actionUpdatePolicy,
	sigilv1.KeyService_RotateKey_FullMethodName:           "rotate",
	sigilv1.KeyService_RevokeGeneration_FullMethodName:    "revoke",
	sigilv1.KeyService_DisableKey_FullMethodName:          "disable",
	sigilv1.KeyService_EnableKey_FullMethodName:           "enable",
	sigilv1.KeyService_ScheduleKeyDeletion_FullMethodName: "schedule-deletion",
	sigilv1.KeyService_CancelKeyDeletion_FullMethodName:   "cancel-deletion",
	sigilv1.KeyService_UpdateKeyMetadata_FullMethodName:   "update-metadata",
}

// adminReview reads the action of a keys.admin request: which it is and,
// for a policy change, whether it loosens the key's policy; a rotation
// that activates its generation at once (asked to, or a key whose purpose
// rotates on demand) is rotate-now.
func (s *Server) adminReview(ctx context.Context, method string, req any) (authz.Facts, []approval.Field, error) {
	action, ok := adminActions[method]
	if !ok {
		return authz.Facts{}, nil, errs.New(errs.Internal, "no action is named for %s", method)
	}
	f := authz.Facts{Actions: []string{action}}
	var sum []approval.Field
	k, _ := s.opts.Keyring.Get(ctx, keyIDOf(req)) // nil for a creation; mustExist answered for the others
	switch r := req.(type) {
	case *sigilv1.CreateKeyRequest:
		if _, _, err := s.keySvc.createPolicy(r); err != nil { // refused, not held
			return f, nil, err
		}
		if r.GetImported() != nil && k != nil {
			// An import into a key that exists is its next generation,
			// placed as a rotation places one: judged as that rotation.
			f.Actions = []string{"rotate"}
			if !rotatesOnSchedule(k) {
				f.Actions = []string{actionRotateNow}
			}
		}
		if r.GetImported() != nil {
			sum = append(sum, approval.Field{Name: "origin", Value: keyring.OriginImported})
		}
		request, err := compactJSON(r)
		if err != nil {
			return f, nil, err
		}
		sum = append(sum, approval.Field{Name: "algorithm", Value: r.GetAlgorithm()}, approval.Field{Name: "purpose", Value: r.GetPurpose()},
			approval.Field{Name: "backend", Value: r.GetBackend()}, approval.Field{Name: "request", Value: request})
	case *sigilv1.RotateKeyRequest:
		if r.GetImmediate() || !rotatesOnSchedule(k) {
			f.Actions = []string{actionRotateNow}
		}
	case *sigilv1.RevokeGenerationRequest:
		if revokesActive(k, int(r.GetGeneration())) { // the next generation signs at once
			f.Actions = append(f.Actions, actionRotateNow)
		}
		sum = append(sum, approval.Field{Name: "generation", Value: strconv.Itoa(int(r.GetGeneration()))})
	case *sigilv1.ScheduleKeyDeletionRequest:
		sum = append(sum, approval.Field{Name: "window", Value: r.GetWindow().AsDuration().String()})
	case *sigilv1.UpdateKeyPolicyRequest:
		loosens, policy, err := s.keySvc.loosens(ctx, r)
		if err != nil {
			return f, nil, err
		}
		if loosens {
			f.Actions = append(f.Actions, actionLoosenPolicy)
		}
		sum = append(sum, approval.Field{Name: "new policy", Value: policy})
	}
	return f, append([]approval.Field{{Name: "action", Value: strings.Join(f.Actions, ", ")}}, sum...), nil
}

// rotatesOnSchedule reports whether k's purpose activates a new
// generation on a schedule (jwt), not at once (raw).
func rotatesOnSchedule(k *keyring.Key) bool {
	if k == nil {
		return false
	}
	p, err := keyring.LookupPurpose(k.Purpose)
	return err == nil && p.Rotation() == keyring.RotateScheduled
}

// revokesActive reports whether revoking generation n takes the signing
// generation of k, a key that rotates on schedule: the next generation is then
// activated at once, as rotate-now would.
func revokesActive(k *keyring.Key, n int) bool {
	return rotatesOnSchedule(k) && slices.ContainsFunc(k.Generations, func(g keyring.Generation) bool {
		return g.Number == n && g.State == keyring.StateActive
	})
}

// compactJSON is m in protobuf JSON, for a summary; an error (an Any
// whose type is unknown) refuses the request rather than hide part of it.
func compactJSON(m proto.Message) (string, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return "", errs.New(errs.InvalidArgument, "request: %v", err)
	}
	return string(b), nil
}

// loosens reports whether the policy an UpdateKeyPolicy request asks for
// loosens the key's policy now, and spells the new policy.
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
	return policyLoosens(p, k.Policy(), updated), string(b), nil
}

// policyLoosens reports whether next allows something cur does not (any
// change does, for a purpose that cannot tell).
func policyLoosens(p purpose.Purpose, cur, next any) bool {
	l, ok := p.(purpose.Loosener)
	return !ok || l.Loosens(cur, next)
}

// loosenCheck refuses, inside the update, a policy change judged not to
// loosen the key's policy that does loosen the policy it replaces (it
// changed meanwhile); none when ctx carries no such judgement.
func loosenCheck(ctx context.Context, id string, p purpose.Purpose) []func(cur, next any) error {
	if may, guarded := ctx.Value(looseningKey{}).(bool); !guarded || may {
		return nil
	}
	return []func(cur, next any) error{func(cur, next any) error {
		if policyLoosens(p, cur, next) {
			return errs.New(errs.FailedPrecondition, "key %q's policy changed since this request was checked: the change now loosens it, which approval rules hold; send it again", id)
		}
		return nil
	}}
}
